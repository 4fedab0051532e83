package wsconn

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/onebot"
)

// logRecords is a slog.Handler that puts every record on a channel.
type logRecords chan slog.Record

func (l logRecords) Enabled(context.Context, slog.Level) bool      { return true }
func (l logRecords) Handle(_ context.Context, r slog.Record) error { l <- r; return nil }
func (l logRecords) WithAttrs([]slog.Attr) slog.Handler            { return l }
func (l logRecords) WithGroup(string) slog.Handler                 { return l }

// next returns the next record with message msg, skipping others.
func (l logRecords) next(t *testing.T, msg string) slog.Record {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case r := <-l:
			if r.Message == msg {
				return r
			}
		case <-deadline:
			t.Fatalf("no %q logged", msg)
		}
	}
}

func attr(r slog.Record, key string) string {
	var v string
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == key {
			v = a.Value.String()
			return false
		}
		return true
	})
	return v
}

func testRedial(url string, log logRecords) (*Redial, *health.Monitor) {
	mon := health.NewMonitor(health.NewMetrics(nil, "test"))
	st := mon.Track(health.RoleTarget, "t")
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	return &Redial{URL: url, Backoff: Backoff{Min: time.Millisecond, Max: 20 * time.Millisecond}, Stats: st, Log: slog.New(log),
		Header: func(context.Context) (http.Header, bool) { return http.Header{"X-Test": {"redial"}}, true },
		Serve: func(ctx context.Context, ws *websocket.Conn, raw io.Closer) Served {
			c := New(ws, raw, st, quiet, Config{CloseTimeout: time.Second, ReadLimit: 1 << 20, QueueSize: 8})
			reason, err := c.Run(ctx, func([]byte) onebot.Kind { return onebot.KindEvent })
			return Served{Reason: reason, Err: err}
		},
		DialFailed: "dial failed", DialHint: func(error) string { return "dial hint" },
		Disconnected: "disconnected", CloseHint: func(error) string { return "close hint" }}, mon
}

// Redial dials with the headers it is given, serves each connection, logs
// its end at warn with the close hint, and dials again.
func TestRedialServesAndRedials(t *testing.T) {
	srv := listen(t)
	log := make(logRecords, 100)
	r, _ := testRedial(srv.URL, log)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	for range 2 {
		p, err := srv.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := p.Header.Get("X-Test"); got != "redial" {
			t.Errorf("X-Test %q, want the Header func's", got)
		}
		p.Close()
		rec := log.next(t, "disconnected")
		if rec.Level != slog.LevelWarn || attr(rec, "reason") != "closed_by_peer" || attr(rec, "hint") != "close hint" {
			t.Errorf("end logged at %v reason %q hint %q", rec.Level, attr(rec, "reason"), attr(rec, "hint"))
		}
	}
	cancel()
	<-done
}

// A dial that keeps failing the same way is logged at warn once, then at
// debug, and recorded in the Stats every time; a skipped attempt is neither.
func TestRedialLogsARepeatedFailureOnce(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	log := make(logRecords, 1000)
	r, mon := testRedial("ws://"+addr+"/", log)
	skip := true
	header := r.Header
	r.Header = func(ctx context.Context) (http.Header, bool) {
		skip = !skip
		if skip {
			return nil, false
		}
		return header(ctx)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	levels := []slog.Level{}
	for range 3 {
		rec := log.next(t, "dial failed")
		levels = append(levels, rec.Level)
		if attr(rec, "hint") != "dial hint" {
			t.Errorf("hint %q", attr(rec, "hint"))
		}
	}
	cancel()
	<-done
	if levels[0] != slog.LevelWarn || levels[1] != slog.LevelDebug || levels[2] != slog.LevelDebug {
		t.Errorf("levels %v, want WARN then DEBUG", levels)
	}
	if mon.Snapshot()[0].LastError == "" {
		t.Error("the failed dial is not recorded in the Stats")
	}
}

// With RefusedHint set, a connection the peer closes with a close frame at
// once is a failed dial (its RefusedError logged once, then at debug; no
// "disconnected"); one lost without a close frame is an ordinary end.
func TestRedialRefusedIsAFailedDial(t *testing.T) {
	srv := listen(t)
	log := make(logRecords, 100)
	r, mon := testRedial(srv.URL, log)
	r.RefusedHint = func(err *RefusedError) string { return "refused hint " + err.Reason }
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	var levels []slog.Level
	for range 2 {
		p, err := srv.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p.WS.Close(websocket.StatusPolicyViolation, "selfId mismatch")
		p.Close()
		rec := log.next(t, "dial failed")
		levels = append(levels, rec.Level)
		if e, h := attr(rec, "error"), attr(rec, "hint"); e != `the peer accepted the WebSocket and closed it at once (close 1008 StatusPolicyViolation: "selfId mismatch")` ||
			h != "refused hint selfId mismatch" {
			t.Errorf("error %q hint %q", e, h)
		}
	}
	if levels[0] != slog.LevelWarn || levels[1] != slog.LevelDebug {
		t.Errorf("levels %v, want WARN then DEBUG", levels)
	}
	if e := mon.Snapshot()[0].LastError; !strings.Contains(e, "closed it at once") {
		t.Errorf("last error %q", e)
	}
	p, err := srv.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	p.Close() // no close frame
	if rec := log.next(t, "disconnected"); attr(rec, "hint") != "close hint" {
		t.Errorf("a lost connection: %v", rec)
	}
	select {
	case rec := <-log:
		if rec.Message == "dial failed" {
			t.Errorf("a lost connection logged as a failed dial")
		}
	default:
	}
	cancel()
	<-done
}
