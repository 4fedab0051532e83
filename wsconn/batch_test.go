package wsconn

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/onebot"
)

// listSource is a Source of a fixed list of events, all due at once, that
// records what is reported written.
type listSource struct {
	mu    sync.Mutex
	items []Item
	added uint64
	wrote []uint64
	fed   chan struct{} // closed when the list has been pulled to its end
	moved chan struct{} // signalled on every Wrote
}

func newListSource(frames ...[]byte) *listSource {
	s := &listSource{fed: make(chan struct{}), moved: make(chan struct{}, 1)}
	s.add(frames...)
	return s
}

func (s *listSource) add(frames ...[]byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range frames {
		s.added++
		s.items = append(s.items, Item{Seq: s.added, Frame: f})
	}
}

func (s *listSource) Pull(dst []Item) []Item {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := len(s.items)
	for len(s.items) > 0 && len(dst) < cap(dst) {
		dst = append(dst, s.items[0])
		s.items = s.items[1:]
	}
	if n > 0 && len(s.items) == 0 {
		select {
		case <-s.fed:
		default:
			close(s.fed)
		}
	}
	return dst
}

func (s *listSource) Wrote(seq uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if k := len(s.wrote); k > 0 && seq <= s.wrote[k-1] {
		panic(fmt.Sprintf("Wrote(%d) after Wrote(%d)", seq, s.wrote[k-1]))
	}
	s.wrote = append(s.wrote, seq)
	select {
	case s.moved <- struct{}{}:
	default:
	}
}

// waitWrote waits until seq is reported written.
func (s *listSource) waitWrote(t *testing.T, seq uint64) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for s.last() < seq {
		select {
		case <-s.moved:
		case <-deadline:
			t.Fatalf("event %d not reported written (last %d)", seq, s.last())
		}
	}
}

func (s *listSource) last() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.wrote) == 0 {
		return 0
	}
	return s.wrote[len(s.wrote)-1]
}

func event(seq, size int) []byte {
	b := bytes.Repeat([]byte(" "), size)
	copy(b, fmt.Sprintf(`{"seq":%d}`, seq))
	return b
}

// Frames due together go to the kernel in one write per BatchBytes: 64 small
// events in one, a 1 MiB event (coder/websocket writes a client's masked
// frame 4 KiB at a time) in 16 of 64 KiB and one for the rest; a single
// small event goes straight through at once, unbatched. Every event arrives, in order,
// and is reported written once the write that carried it returned.
func TestBatchOneWritePerBatch(t *testing.T) {
	c, p := pair(t, Config{QueueSize: 8, CloseTimeout: time.Second, ReadLimit: 1 << 20, WriteTimeout: 5 * time.Second})
	if c.bc == nil {
		t.Fatal("Dial did not give the Conn a batchConn")
	}
	var frames [][]byte
	for i := 1; i <= 64; i++ {
		frames = append(frames, event(i, 300))
	}
	src := newListSource(frames...)
	c.SetSource(src) // all 64 due before the writer starts
	done := run(c, func([]byte) onebot.Kind { return onebot.KindInvalid })
	for i := 1; i <= 64; i++ {
		if b := recv(t, p); !bytes.Equal(b, frames[i-1]) {
			t.Fatalf("frame %d: got %.20s", i, b)
		}
	}
	src.waitWrote(t, 64)
	if n := c.bc.writes.Load(); n != 1 {
		t.Errorf("64 small events due at once took %d writes, want 1", n)
	}

	before := c.bc.writes.Load()
	src.add(event(65, 300))
	c.Wake()
	if b := recv(t, p); !bytes.HasPrefix(b, []byte(`{"seq":65}`)) {
		t.Fatalf("got %.20s", b)
	}
	src.waitWrote(t, 65)
	if n := c.bc.writes.Load() - before; n != 0 {
		t.Errorf("one small event was batched (%d writes), want it written straight through", n)
	}

	before = c.bc.writes.Load()
	big := event(66, 1<<20)
	src.add(big)
	c.Wake()
	if b := recv(t, p); !bytes.Equal(b, big) {
		t.Fatalf("1 MiB event: got %d bytes %.20s", len(b), b)
	}
	src.waitWrote(t, 66)
	if n := c.bc.writes.Load() - before; n > 17 {
		t.Errorf("a 1 MiB event took %d writes, want at most 17 (64 KiB each)", n)
	}
	c.Close(DisconnectShutdown, nil)
	if r := <-done; r != health.ReasonShutdown {
		t.Errorf("reason %v", r)
	}
}

// A batch to a peer that stops reading ends with write_error after
// WriteTimeout (the timeout is armed around the batch's own writes), and no
// event is reported written that the peer did not get.
func TestBatchWriteTimeoutAndWrote(t *testing.T) {
	c, p := pair(t, Config{QueueSize: 8, CloseTimeout: time.Second, ReadLimit: 1 << 20, WriteTimeout: 200 * time.Millisecond})
	p.Pause()
	c.SetGreeting([]byte(`{}`)) // the peer's reader takes this one, then stops
	var frames [][]byte
	for i := 1; i <= 1024; i++ { // 16 MiB: more than the socket buffers hold
		frames = append(frames, event(i, 16<<10))
	}
	src := newListSource(frames...)
	c.SetSource(src)
	done := run(c, func([]byte) onebot.Kind { return onebot.KindInvalid })
	select {
	case r := <-done:
		if r != health.ReasonWriteError {
			t.Fatalf("reason %v, want write_error", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stuck batch was not cut by the write timeout")
	}
	wrote := src.last()
	if wrote == 1024 {
		t.Fatal("every event reported written to a peer that read none")
	}
	p.Resume()
	got := uint64(0)
	if b := recv(t, p); string(b) != `{}` {
		t.Fatalf("first frame %.20s", b)
	}
	for b := range p.Frames {
		got++
		if want := event(int(got), 16<<10); !bytes.Equal(b, want) {
			t.Fatalf("frame %d: got %.20s", got, b)
		}
	}
	if wrote > got {
		t.Errorf("reported written up to %d, the peer got %d", wrote, got)
	}
}

// Alarms start writer turns: heartbeats keep coming at
// their interval, pings are answered (their round trip recorded), a peer
// that stops answering pings ends the connection with keepalive_timeout,
// and cancelling Run's context ends it as shutdown.
func TestAlarmsWakeTheWriter(t *testing.T) {
	c, p := pair(t, Config{QueueSize: 8, CloseTimeout: time.Second, ReadLimit: 1 << 20,
		PingInterval: 40 * time.Millisecond, PingTimeout: 300 * time.Millisecond})
	c.SetHeartbeat(20*time.Millisecond, func() []byte { return []byte(`{"hb":1}`) })
	done := run(c, func([]byte) onebot.Kind { return onebot.KindInvalid })
	for range 5 {
		if b := recv(t, p); string(b) != `{"hb":1}` {
			t.Fatalf("got %s, want heartbeats", b)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(c.Stats().M.PingRTT) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no ping round trip recorded")
		}
		recv(t, p) // the next heartbeat: time passes on the writer's own timers
	}
	p.Pause() // no more reads: no pong either
	select {
	case r := <-done:
		if r != health.ReasonKeepaliveTimeout {
			t.Errorf("reason %v, want keepalive_timeout", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a peer that answers no ping was not cut")
	}
	p.Close()

	c2, p2 := pair(t, Config{QueueSize: 8, CloseTimeout: time.Second, ReadLimit: 1 << 20, PingInterval: time.Hour, PingTimeout: time.Minute})
	c2.SetHeartbeat(time.Hour, func() []byte { return []byte(`{}`) })
	ctx, cancel := context.WithCancel(context.Background())
	ended := make(chan health.Reason, 1)
	go func() {
		r, _ := c2.Run(ctx, func([]byte) onebot.Kind { return onebot.KindInvalid })
		ended <- r
	}()
	c2.Send([]byte(`{"n":1}`), onebot.KindAPIResponse)
	recv(t, p2) // the writer is up and waiting
	cancel()
	select {
	case r := <-ended:
		if r != health.ReasonShutdown && r != health.ReasonClosedByPeer {
			t.Errorf("reason %v after cancel, want shutdown", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not end when its context was cancelled")
	}
}
