package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/internal/sim"
)

// quietUpstream is a simulated implementation that reads every frame obmux
// sends and answers only the API calls for which answer returns true.
type quietUpstream struct {
	*sim.Server
	mu    sync.Mutex
	peer  *sim.Peer
	calls atomic.Int64 // API calls read
	sends atomic.Int64 // of them, send_msg
	wg    sync.WaitGroup
}

func newQuietUpstream(t *testing.T, answer func(req []byte) bool) *quietUpstream {
	t.Helper()
	s, err := sim.Listen("127.0.0.1:0", "/")
	if err != nil {
		t.Fatal(err)
	}
	u := &quietUpstream{Server: s}
	u.wg.Go(func() {
		for p := range s.Accepted {
			u.mu.Lock()
			u.peer = p
			u.mu.Unlock()
			p.Send(context.Background(), sim.Lifecycle(testSelfID, "connect"))
			u.wg.Go(func() {
				for req := range p.Frames {
					u.calls.Add(1)
					if bytes.HasPrefix(req, []byte(`{"action":"send_msg"`)) {
						u.sends.Add(1)
					}
					if answer != nil && answer(req) {
						p.Send(context.Background(), sim.Answer(testSelfID, req))
					}
				}
			})
		}
	})
	t.Cleanup(func() {
		s.Close()
		close(s.Accepted)
		u.wg.Wait()
	})
	return u
}

// send sends an event on the current connection.
func (u *quietUpstream) send(b []byte) error {
	u.mu.Lock()
	p := u.peer
	u.mu.Unlock()
	if p == nil {
		return fmt.Errorf("no upstream connection")
	}
	return p.Send(context.Background(), b)
}

// bigCall is an API call of about size bytes whose echo is a number written
// over its last digits by setEcho, so that one buffer serves every call.
type bigCall []byte

func newBigCall(size int) bigCall {
	return bigCall(fmt.Appendf(nil, `{"action":"send_msg","params":{"message":"%s"},"echo":"000000"}`, strings.Repeat("m", size)))
}

func (b bigCall) setEcho(n int) []byte {
	copy(b[len(b)-8:], fmt.Sprintf("%06d", n))
	return b
}

type answer struct {
	Retcode int             `json:"retcode"`
	Message string          `json:"message"`
	Echo    json.RawMessage `json:"echo"`
}

// Two targets each send 10 calls of 8 MiB to an upstream that reads them and
// never answers. Before the fix each pending call pinned its whole request
// (the echo was a slice of it) and nothing bounded their bytes: obmux's peak
// RSS grew with the calls (20 x 8 MiB and more). Now each caller has at most
// OBMUX_API_MAX_INFLIGHT_BYTES in flight, all of them at most
// OBMUX_QUEUE_BYTES, the next call waits (its target is not read from), and
// every call still gets its one answer. A call that times out while its
// frame still waits for the upstream (a slow upstream: under load the one
// here, in the race-built test process, reads 8 MiB/s) counts until the
// frame is written; before that fix such frames piled up in the upstream's
// queue (its peak, 199-222 MiB, grew with how slowly the upstream read)
// until it was full and calls failed with 1502.
func TestCallsInFlightBoundedInBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the obmux binary and moves 480 MiB")
	}
	up := newQuietUpstream(t, nil)
	a, b := newTarget(t), newTarget(t)
	in := startChild(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+a.URL, "OBMUX_TARGET_B_URL="+b.URL,
		"OBMUX_SELF_ID=10001", "OBMUX_HEARTBEAT_INTERVAL=0", "OBMUX_API_TIMEOUT=1s")
	peers := []*sim.Peer{a.accept(), b.accept()}
	eventually(t, "upstream up", func() bool { return in.metric("obmux_connection_up", "role=upstream") == 1 })
	const calls = 10
	ctx := ctxFor(t, 2*time.Minute)
	var wg sync.WaitGroup
	for _, p := range peers {
		wg.Go(func() {
			call := newBigCall(8 << 20)
			for i := range calls {
				if err := p.Send(ctx, call.setEcho(i)); err != nil {
					t.Errorf("send: %v", err)
					return
				}
			}
		})
	}
	for pi, p := range peers {
		got := map[int]int{}
		for range calls {
			var r answer
			b, err := p.Next(ctx)
			if err != nil {
				t.Fatalf("target %d: %v (answers so far %v)", pi, err, got)
			}
			if err := json.Unmarshal(b, &r); err != nil || r.Retcode != 1504 {
				t.Fatalf("target %d: want a 1504, got %.300s", pi, b)
			}
			n, _ := strconv.Atoi(strings.Trim(string(r.Echo), `"`))
			got[n]++
		}
		for i := range calls {
			if got[i] != 1 {
				t.Errorf("target %d: call %d answered %d times", pi, i, got[i])
			}
		}
	}
	wg.Wait()
	// The last calls were answered 1504 while their frames may still be on
	// the way; every one is written.
	eventually(t, "the upstream to read every call", func() bool { return up.sends.Load() == 2*calls })
	in.checkPeak(fmt.Sprintf("%d calls of 8 MiB to a silent upstream", 2*calls), 2*in.cfg.QueueBytes+64<<20)
}

// One client without a token sends 100 frames {"echo":"<4 MiB>"} and reads
// nothing. Before the fix every 1400 answer copied its 4 MiB echo and only
// the frame count of the queue bounded them (peak RSS 1.3 GiB for 200
// frames; 100, 400 MiB of echoes, are still twice the bound, and the race-
// built client masks them in half the time: under load 200 took over the
// two minutes). Now an echo
// over 1 KiB is not returned (the message says so) and the answers are
// queued within OBMUX_QUEUE_BYTES: obmux stays small, and the client gets
// every answer once it reads.
func TestRejectFloodBoundedInBytes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the obmux binary and moves 400 MiB")
	}
	up := newUpstream(t, "127.0.0.1:0")
	// Keepalive off: the client reads nothing, pongs included.
	in := startChild(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_FORWARD_LISTEN=127.0.0.1:0", "OBMUX_HEARTBEAT_INTERVAL=0",
		"OBMUX_PING_INTERVAL=0")
	up.connected()
	eventually(t, "obmux ready", func() bool { code, _ := in.get("/readyz"); return code == http.StatusOK })
	ctx := ctxFor(t, 2*time.Minute)
	ws, _, err := websocket.Dial(ctx, "ws://"+in.addrs.Forward+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	ws.SetReadLimit(-1)
	frame := []byte(`{"echo":"` + strings.Repeat("e", 4<<20) + `"}`)
	const frames = 100
	for range frames {
		if err := ws.Write(ctx, websocket.MessageText, frame); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "every frame read", func() bool {
		return in.metric("obmux_dropped_frames_total", "name=/", "reason=invalid") == frames
	})
	in.checkPeak(fmt.Sprintf("%d frames with a 4 MiB echo, never read", frames), 2*int64(in.cfg.QueueBytes)+64<<20)
	replies := 0
	for replies < frames {
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatalf("after %d replies: %v", replies, err)
		}
		if bytes.Contains(b, []byte(`"meta_event"`)) {
			continue
		}
		var r answer
		json.Unmarshal(b, &r)
		if r.Retcode != 1400 || r.Echo != nil || !strings.Contains(r.Message, "echo not returned: longer than 1024 bytes") {
			t.Fatalf("reply %d: %.300s", replies, b)
		}
		replies++
	}
}

// obmux's own 1400 answers are queued within OBMUX_QUEUE_BYTES, not only
// OBMUX_QUEUE_SIZE: a client that sends 20 000 frames with a 1000-byte echo
// and reads nothing has the answers over the byte bound dropped and counted.
// Before the fix the queue (100 000 frames here) took them all.
func TestRejectRepliesQueueBoundedInBytes(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	in := startForward(t, up, "OBMUX_HEARTBEAT_INTERVAL=0", "OBMUX_QUEUE_SIZE=100000", "OBMUX_QUEUE_BYTES=1048576",
		"OBMUX_LOG_LEVEL=info")
	// 20 MB through the race-built obmux in this process: under load more
	// than the 10 s of ctxT.
	ctx := ctxFor(t, 2*time.Minute)
	ws, _, err := websocket.Dial(ctx, "ws://"+in.addrs.Forward+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	frame := []byte(`{"echo":"` + strings.Repeat("e", 998) + `"}`) // a 1000-byte echo is returned
	const frames = 20000
	for range frames {
		if err := ws.Write(ctx, websocket.MessageText, frame); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "answers over the byte bound dropped", func() bool {
		return in.metric("obmux_dropped_frames_total", "name=/", "reason=invalid") == frames &&
			in.metric("obmux_dropped_frames_total", "name=/", "reason=queue_full") > 0
	})
	dropped := in.metric("obmux_dropped_frames_total", "name=/", "reason=queue_full")
	t.Logf("%v of %d answers of 1.1 KB dropped", dropped, frames)
	_, b, err := ws.Read(ctx) // the greeting
	if err != nil || !bytes.Contains(b, []byte(`"lifecycle"`)) {
		t.Fatalf("first frame %.200s, %v", b, err)
	}
	_, b, err = ws.Read(ctx)
	if err != nil || !bytes.Contains(b, []byte(`"retcode":1400`)) || !bytes.Contains(b, []byte(`"echo":"eee`)) {
		t.Fatalf("first answer %.200s, %v", b, err)
	}
}

// Over OBMUX_FORWARD_MAX_CLIENTS a client is refused with 503 and a body
// naming the variable, counted every time and logged once per run of
// refusals; when a client leaves, the next one fits.
func TestForwardMaxClients(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	in := startForward(t, up, "OBMUX_FORWARD_MAX_CLIENTS=2", "OBMUX_HEARTBEAT_INTERVAL=0")
	c1, _ := dialForward(t, in, "/", nil), dialForward(t, in, "/event", nil)
	for i := range 3 {
		_, resp, err := sim.Dial(ctxT(t), "ws://"+in.addrs.Forward+"/api", nil)
		if err == nil || resp == nil || resp.StatusCode != http.StatusServiceUnavailable {
			t.Fatalf("client %d over the cap: %v %v", i+3, resp, err)
		}
		var body bytes.Buffer
		body.ReadFrom(resp.Body)
		if !strings.Contains(body.String(), "at most 2 forward clients") || !strings.Contains(body.String(), "OBMUX_FORWARD_MAX_CLIENTS") {
			t.Errorf("503 body: %q", body.String())
		}
	}
	if got := in.metric("obmux_forward_clients_refused_total"); got != 3 {
		t.Errorf("refusals counted: %v, want 3", got)
	}
	if n := strings.Count(in.log.String(), "forward client refused with 503"); n != 1 {
		t.Errorf("refusals logged %d times, want once", n)
	}
	c1.p.Close()
	eventually(t, "the first client gone", func() bool { return in.metric("obmux_connection_up", "role=client", "name=/") == 0 })
	c3 := dialForward(t, in, "/api", nil)
	if r := c3.call(`{"action":"get_status","echo":1}`); r.Retcode == nil || *r.Retcode != 0 {
		t.Errorf("the client that fits again: %+v", r)
	}
	if !strings.Contains(in.log.String(), "forward clients fit under OBMUX_FORWARD_MAX_CLIENTS again") {
		t.Error("the end of the refusals is not logged")
	}
}

// 20 clients each send a 100 MiB message (over the 16 MiB read limit).
// Before the fix each grew its own read buffer to the limit at once (peak
// RSS 540 MiB); now a message over 64 KiB is read only with a share of one
// budget of 2 x OBMUX_MAX_MESSAGE_BYTES, every one of them is still closed
// with 1009 (no reader deadlocks), and a small call meanwhile is answered.
func TestLargeMessagesShareOneReadBudget(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the obmux binary and moves 2 GiB")
	}
	up := newUpstream(t, "127.0.0.1:0")
	// Keepalive off: a client blocked in its 100 MiB write (obmux reads it
	// only with a share of the budget, under load tens of seconds later)
	// cannot write the pong, and coder/websocket ends its read after 5 s
	// without the write lock ("failed to write control frame opPong"): the
	// client would leave before obmux reads past the limit, or see that
	// error in place of the 1009.
	in := startChild(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_FORWARD_LISTEN=127.0.0.1:0", "OBMUX_HEARTBEAT_INTERVAL=0",
		"OBMUX_PING_INTERVAL=0")
	up.connected()
	eventually(t, "obmux ready", func() bool { code, _ := in.get("/readyz"); return code == http.StatusOK })
	small := dialForward(t, in.instance, "/api", nil)
	ctx := ctxFor(t, 2*time.Minute)
	big := []byte(`{"action":"send_msg","params":{"message":"` + strings.Repeat("m", 100<<20) + `"}}`)
	const clients = 20
	var wg sync.WaitGroup
	var closed1009 atomic.Int32
	for range clients {
		ws, _, err := websocket.Dial(ctx, "ws://"+in.addrs.Forward+"/api", nil)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			defer ws.CloseNow()
			go ws.Write(ctx, websocket.MessageText, big) // ends when obmux closes
			for {
				_, _, err := ws.Read(ctx)
				if err != nil {
					if websocket.CloseStatus(err) == websocket.StatusMessageTooBig {
						closed1009.Add(1)
					}
					return
				}
			}
		})
	}
	if r := small.call(`{"action":"get_status","echo":"small"}`); r.Retcode == nil || *r.Retcode != 0 {
		t.Errorf("a small call during the large messages: %+v", r)
	}
	wg.Wait()
	if got := in.metric("obmux_dropped_frames_total", "reason=oversized"); got != clients {
		t.Errorf("oversized messages counted: %v, want %d", got, clients)
	}
	if n := closed1009.Load(); n != clients {
		t.Errorf("%d of %d clients saw close 1009", n, clients)
	}
	in.checkPeak("20 clients each sending a 100 MiB message", 192<<20)
}
