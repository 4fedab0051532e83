package natsbus

import (
	"bytes"
	"context"
	"fmt"

	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"

	"github.com/obmux/obmux/internal/natstest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const wait = 20 * time.Second

// running is a Publisher on a real server, publishing until the test ends.
type running struct {
	*Publisher
	m   *Metrics
	log *syncBuffer
	nc  *nats.Conn
}

func testConfig() PublisherConfig {
	return PublisherConfig{Stream: "ONEBOT", MaxAge: time.Hour, MaxBytes: 64 << 20, BufferBytes: 8 << 20,
		BufferEvents: 10000, MaxInflight: 64, AckTimeout: 2 * time.Second, Retry: 20 * time.Millisecond}
}

func startPublisher(t *testing.T, url string, cfg PublisherConfig) *running {
	t.Helper()
	return startPublisherOn(t, ConnConfig{URL: url, Name: "test"}, cfg)
}

func startPublisherOn(t *testing.T, conn ConnConfig, cfg PublisherConfig) *running {
	t.Helper()
	buf := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	nc, err := Connect(conn, m, log)
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPublisher(nc, cfg, m, reg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { p.Run(ctx) })
	t.Cleanup(func() {
		cancel()
		wg.Wait()
		nc.Close()
		if t.Failed() {
			t.Logf("publisher log:\n%s", buf.String())
		}
	})
	return &running{Publisher: p, m: m, log: buf, nc: nc}
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func flushed(t *testing.T, p *Publisher) {
	t.Helper()
	select {
	case <-p.Flushed():
	case <-time.After(wait):
		n, _, _ := p.Buffered()
		t.Fatalf("%d events still not acknowledged", n)
	}
}

func sample(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "onebot", "testdata", "samples", "events_"+name))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}

// TestPublishesEverySampleOnItsSubject publishes the shared samples: every
// event on its subject, byte for byte and in order, meta events not at all.
func TestPublishesEverySampleOnItsSubject(t *testing.T) {
	srv := natstest.Start(t, t.TempDir(), 0)
	p := startPublisher(t, srv.URL(), testConfig())
	cases := []struct{ file, subject string }{
		{"group_message_text.json", "onebot.%d.event.message.group"},
		{"meta_heartbeat.json", ""},
		{"private_message.json", "onebot.%d.event.message.private"},
		{"message_sent.json", "onebot.%d.event.message_sent.group"},
		{"notice_group_recall.json", "onebot.%d.event.notice.group_recall"},
		{"notice_poke.json", "onebot.%d.event.notice.notify"},
		{"request_friend.json", "onebot.%d.event.request.friend"},
		{"meta_lifecycle_connect.json", ""},
	}
	var want [][]byte
	var subjects []string
	for _, c := range cases {
		b := sample(t, c.file)
		p.Event(b)
		if c.subject != "" {
			want = append(want, b)
			id := selfIDOf(t, b)
			subjects = append(subjects, fmt.Sprintf(c.subject, id))
		}
	}
	// An image event as NapCat sends it (base64 inline): 600 KB, under
	// the server's default max_payload of 1 MiB.
	image := fmt.Appendf(nil, `{"self_id":10001,"post_type":"message","message_type":"group","message":[{"type":"image","data":{"file":"base64://%s"}}]}`,
		bytes.Repeat([]byte("QUJD"), 150_000))
	p.Event(image)
	want = append(want, image)
	subjects = append(subjects, "onebot.10001.event.message.group")
	flushed(t, p.Publisher)
	got := srv.Stored(t, "ONEBOT")
	if len(got) != len(want) {
		t.Fatalf("stored %d messages, want %d", len(got), len(want))
	}
	for i, m := range got {
		if m.Subject() != subjects[i] || !bytes.Equal(m.Data(), want[i]) {
			t.Errorf("message %d: %s %.60q, want %s %.60q", i, m.Subject(), m.Data(), subjects[i], want[i])
		}
		if m.Headers().Get(jetstream.MsgIDHeader) == "" {
			t.Errorf("message %d has no Nats-Msg-Id", i)
		}
	}
	if v := testutil.ToFloat64(p.m.published); v != float64(len(want)) {
		t.Errorf("obmux_nats_published_total = %v, want %d", v, len(want))
	}
}

func selfIDOf(t *testing.T, b []byte) int64 {
	t.Helper()
	i := bytes.Index(b, []byte(`"self_id":`))
	var id int64
	if _, err := fmt.Sscan(string(b[i+len(`"self_id":`):]), &id); err != nil {
		// the number is followed by a comma: Sscan stops there
		if id == 0 {
			t.Fatal(err)
		}
	}
	return id
}

// TestServerRestartLosesNothing stops the NATS server while events keep
// coming and starts it again: the stream ends with every event once, in
// order, and obmux never waited for NATS.
func TestServerRestartLosesNothing(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.Start(t, dir, 0)
	p := startPublisher(t, srv.URL(), testConfig())
	ev := func(n int) []byte {
		return fmt.Appendf(nil, `{"time":1,"self_id":10001,"post_type":"message","message_type":"private","user_id":7,"message_id":%d,"raw_message":"n"}`, n)
	}
	const before, during, after = 300, 300, 300
	for n := range before {
		p.Event(ev(n))
	}
	flushed(t, p.Publisher)
	srv.Stop()
	eventually(t, "the publisher sees NATS gone", func() bool { return !p.nc.IsConnected() })
	begin := time.Now()
	for n := before; n < before+during; n++ {
		p.Event(ev(n)) // must not wait for NATS
	}
	if d := time.Since(begin); d > time.Second {
		t.Errorf("queueing %d events with NATS away took %v", during, d)
	}
	if n, _, _ := p.Buffered(); n != during {
		t.Errorf("buffered %d events while NATS is away, want %d", n, during)
	}
	srv = natstest.Start(t, dir, srv.Port())
	for n := before + during; n < before+during+after; n++ {
		p.Event(ev(n))
	}
	flushed(t, p.Publisher)
	got := srv.Stored(t, "ONEBOT")
	if len(got) != before+during+after {
		t.Fatalf("stored %d events, want %d", len(got), before+during+after)
	}
	for i, m := range got {
		if !bytes.Equal(m.Data(), ev(i)) {
			t.Fatalf("event %d is %s", i, m.Data())
		}
	}
	if testutil.ToFloat64(p.m.errors) == 0 {
		t.Error("obmux_nats_publish_errors_total stayed 0 across a server restart")
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBufferFullDropsAndCounts: with NATS unreachable the buffer holds what
// it may, counts what overflows and says so once.
func TestBufferFullDropsAndCounts(t *testing.T) {
	srv := natstest.Start(t, t.TempDir(), 0)
	url := srv.URL()
	srv.Stop() // a server that was there and is gone
	cfg := testConfig()
	cfg.BufferEvents = 10
	p := startPublisher(t, url, cfg)
	for n := range 25 {
		p.Event(fmt.Appendf(nil, `{"post_type":"notice","notice_type":"x","self_id":1,"n":%d}`, n))
	}
	if n, _, _ := p.Buffered(); n != 10 {
		t.Errorf("buffered %d, want 10", n)
	}
	if v := testutil.ToFloat64(p.m.droppedFull); v != 15 {
		t.Errorf("obmux_nats_dropped_total{reason=buffer_full} = %v, want 15", v)
	}
	if n := strings.Count(p.log.String(), "NATS buffer full"); n != 1 {
		t.Errorf("logged the full buffer %d times, want once", n)
	}
}

// TestTooLargeIsDroppedNotStuck: an event over the server's max_payload
// cannot ever be stored; it is counted and the events after it go on.
func TestTooLargeIsDroppedNotStuck(t *testing.T) {
	srv := natstest.Start(t, t.TempDir(), 0)
	cfg := testConfig()
	cfg.BufferBytes = 32 << 20
	p := startPublisher(t, srv.URL(), cfg)
	eventually(t, "connected", p.nc.IsConnected)
	big := append([]byte(`{"post_type":"message","message_type":"group","self_id":1,"raw_message":"`),
		bytes.Repeat([]byte("a"), int(p.nc.MaxPayload()))...)
	big = append(big, `"}`...)
	p.Event([]byte(`{"post_type":"notice","notice_type":"a","self_id":1}`))
	p.Event(big)
	p.Event([]byte(`{"post_type":"notice","notice_type":"b","self_id":1}`))
	flushed(t, p.Publisher)
	got := srv.Stored(t, "ONEBOT")
	if len(got) != 2 || got[1].Subject() != "onebot.1.event.notice.b" {
		t.Fatalf("stored %d messages", len(got))
	}
	if v := testutil.ToFloat64(p.m.droppedLarge); v != 1 {
		t.Errorf("obmux_nats_dropped_total{reason=too_large} = %v, want 1", v)
	}
}

// TestExistingStreams: an operator's stream is used as it is; one that
// does not fit is a clear error.
func TestExistingStreams(t *testing.T) {
	cases := []struct {
		name     string
		existing []jetstream.StreamConfig
		err      string // "" : fits
	}{
		{"missing: created", nil, ""},
		{"operator's own settings", []jetstream.StreamConfig{{Name: "ONEBOT", Subjects: []string{"onebot.*.event.>", "onebot.*.status"}, MaxAge: time.Minute}}, ""},
		{"other subjects", []jetstream.StreamConfig{{Name: "ONEBOT", Subjects: []string{"other.>"}}}, "does not capture onebot.1.event.message.group"},
		{"captures the API", []jetstream.StreamConfig{{Name: "ONEBOT", Subjects: []string{"onebot.>"}}}, "captures the API subject"},
		{"another stream has the subjects", []jetstream.StreamConfig{{Name: "MINE", Subjects: []string{"onebot.>"}}}, "does another stream already capture"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			srv := natstest.Start(t, t.TempDir(), 0)
			nc, err := nats.Connect(srv.URL())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			js, _ := jetstream.New(nc)
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			for _, sc := range c.existing {
				if _, err := js.CreateStream(ctx, sc); err != nil {
					t.Fatal(err)
				}
			}
			err = EnsureStream(ctx, js, testConfig())
			if c.err == "" && err != nil || c.err != "" && (err == nil || !strings.Contains(err.Error(), c.err)) {
				t.Fatalf("EnsureStream: %v, want %q", err, c.err)
			}
			if c.err == "" {
				s, _ := js.Stream(ctx, "ONEBOT")
				info, _ := s.Info(ctx)
				want := time.Hour
				if len(c.existing) > 0 {
					want = c.existing[0].MaxAge
				}
				if info.Config.MaxAge != want {
					t.Errorf("stream MaxAge %v, want %v", info.Config.MaxAge, want)
				}
			}
		})
	}
}

// TestTokenAuth: with OBMUX_NATS_TOKEN the publisher gets in; without it the
// server refuses it, obmux says so and keeps every event buffered.
func TestTokenAuth(t *testing.T) {
	srv := natstest.StartWithToken(t, t.TempDir(), "s3cret")
	t.Run("token", func(t *testing.T) {
		p := startPublisherOn(t, ConnConfig{URL: srv.URL(), Token: "s3cret"}, testConfig())
		p.Event([]byte(`{"post_type":"notice","notice_type":"a","self_id":1}`))
		flushed(t, p.Publisher)
	})
	t.Run("none", func(t *testing.T) {
		p := startPublisherOn(t, ConnConfig{URL: srv.URL()}, testConfig())
		p.Event([]byte(`{"post_type":"notice","notice_type":"a","self_id":1}`))
		eventually(t, "the refusal is logged", func() bool { return strings.Contains(p.log.String(), "NATS stream not ready") })
		if n, _, _ := p.Buffered(); n != 1 {
			t.Errorf("without the token: %d buffered, want 1", n)
		}
		if strings.Contains(p.log.String(), "s3cret") {
			t.Error("the token is in the log")
		}
	})
}

// The stream disappears while obmux runs (an operator deletes it, NATS
// comes back with an empty store): it is made again and publishing goes on.
func TestStreamDeletedAtRuntime(t *testing.T) {
	srv := natstest.Start(t, t.TempDir(), 0)
	p := startPublisher(t, srv.URL(), testConfig())
	p.Event([]byte(`{"post_type":"notice","notice_type":"a","self_id":1}`))
	flushed(t, p.Publisher)
	srv.DeleteStream(t, "ONEBOT")
	p.Event([]byte(`{"post_type":"notice","notice_type":"b","self_id":1}`))
	flushed(t, p.Publisher)
	if got := srv.Stored(t, "ONEBOT"); len(got) != 1 || got[0].Subject() != "onebot.1.event.notice.b" {
		t.Errorf("the stream made again holds %d messages", len(got))
	}
}
