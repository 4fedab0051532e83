package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/obmux/obmux/internal/sim"
)

// The soak scenario of issue 13: the hostile peers of its items 1, 2, 4 and 8
// all at once (a target sending 1 MiB calls and reading nothing, a client
// sending frames with a 4 MiB echo and reading nothing, a flood of
// wrong-token requests, connections holding requests without their body),
// beside healthy peers: two targets that must get every event at the rate the
// upstream sends them, in order, and a client whose API calls must keep being
// answered. obmux's peak RSS stays under 2 x OBMUX_QUEUE_BYTES + 64 MiB.
func TestSoakHostilePeersBesideHealthyOnes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the obmux binary under floods for a few seconds")
	}
	const (
		rate   = 2000 // events per second to each healthy target
		events = 8000
		token  = "soak-token"
	)
	up := newQuietUpstream(t, func(req []byte) bool { return !bytes.Contains(req, []byte(`"send_msg"`)) })
	a, b, hostile := newTarget(t), newTarget(t), newTarget(t)
	in := startChild(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+a.URL, "OBMUX_TARGET_B_URL="+b.URL,
		"OBMUX_TARGET_HOSTILE_URL="+hostile.URL, "OBMUX_SELF_ID=10001", "OBMUX_HEARTBEAT_INTERVAL=0",
		"OBMUX_FORWARD_LISTEN=127.0.0.1:0", "OBMUX_FORWARD_TOKEN="+token, "OBMUX_API_TIMEOUT=2s", "OBMUX_HTTP_TIMEOUT=1s",
		// Keepalive as shipped (20 s): on a loaded CI machine a shorter one
		// cut the healthy peers of the race-built test process.
		"OBMUX_QUEUE_BYTES=33554432",
		// At most 4 MiB of the hostile target's calls wait ahead of a healthy
		// call in the upstream's queue (it is read in order).
		"OBMUX_API_MAX_INFLIGHT_BYTES=4194304")
	pa, pb := a.accept(), b.accept()
	eventually(t, "obmux ready", func() bool { code, _ := in.get("/readyz"); return code == http.StatusOK })
	auth := http.Header{"Authorization": {"Bearer " + token}}
	client, _, err := sim.Dial(ctxT(t), "ws://"+in.addrs.Forward+"/api", auth)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	next(t, client) // lifecycle connect

	ctx, stopFloods := context.WithCancel(context.Background())
	var floods sync.WaitGroup
	var calls, echoes, wrong, bodyless atomic.Int64
	floods.Go(func() { floodCalls(ctx, hostile, &calls) })
	// Frames without an action and with a 4 MiB echo (each answered with a
	// 1400), never reading the answers.
	echo := []byte(`{"echo":"` + strings.Repeat("e", 4<<20) + `"}`)
	floods.Go(func() { sim.UnreadFlood(ctx, "ws://"+in.addrs.Forward+"/", auth, echo, &echoes) })
	floods.Go(func() { sim.WrongTokenFlood(ctx, "http://"+in.addrs.Forward+"/", &wrong) })
	for _, addr := range []string{in.addrs.Forward, in.addrs.Metrics} {
		for range 20 {
			floods.Go(func() { sim.BodylessFlood(ctx, addr, &bodyless) })
		}
	}
	defer func() {
		stopFloods()
		floods.Wait()
	}()
	// Let every flood get going before the measured part.
	eventually(t, "the floods under way", func() bool {
		return calls.Load() > 0 && echoes.Load() > 0 && wrong.Load() > 0 && bodyless.Load() > 0
	})

	received := make([]chan time.Duration, 2)
	start := time.Now()
	for i, p := range []*sim.Peer{pa, pb} {
		received[i] = make(chan time.Duration, 1)
		go func() { received[i] <- receiveInOrder(t, p, events, start) }()
	}
	var answered, failed, slowest atomic.Int64
	callsDone := make(chan struct{})
	go func() {
		defer close(callsDone)
		healthyCalls(ctx, client, &answered, &failed, &slowest)
	}()
	for i := 1; i <= events; i++ {
		if d := time.Until(start.Add(time.Duration(i-1) * time.Second / rate)); d > 0 {
			time.Sleep(d) // pacing the upstream at rate, not waiting for an event
		}
		if err := up.send(event(i)); err != nil {
			t.Fatalf("upstream send %d: %v", i, err)
		}
	}
	sendTook := time.Since(start)
	for i, ch := range received {
		took := <-ch
		if took < 0 {
			t.Fatalf("healthy target %d did not get every event", i)
		}
		got := float64(events) / took.Seconds()
		t.Logf("healthy target %d: %d events in order in %v (%.0f ev/s; sent at %d ev/s in %v)", i, events, took.Round(time.Millisecond),
			got, rate, sendTook.Round(time.Millisecond))
		if got < 0.9*rate {
			t.Errorf("healthy target %d got %.0f ev/s, want at least 90%% of the %d ev/s sent", i, got, rate)
		}
	}
	stopFloods()
	floods.Wait()
	<-callsDone
	t.Logf("healthy client: %d calls answered during the floods, %d failed, slowest %v", answered.Load(), failed.Load(),
		time.Duration(slowest.Load()).Round(time.Millisecond))
	if answered.Load() < 20 || failed.Load() > 0 {
		t.Errorf("healthy client: %d calls answered, %d failed; want at least 20, none failed", answered.Load(), failed.Load())
	}
	t.Logf("floods: %d calls of 1 MiB, %d frames with a 4 MiB echo, %d wrong-token requests, %d body-less requests",
		calls.Load(), echoes.Load(), wrong.Load(), bodyless.Load())
	if got := in.metric("obmux_auth_failures_total", "listener=forward", "reason=wrong_token"); got < float64(wrong.Load()) {
		t.Errorf("wrong-token refusals counted %v, sent %d", got, wrong.Load())
	}
	if code, _ := in.get("/readyz"); code != http.StatusOK {
		t.Errorf("/readyz after the floods: %d", code)
	}
	in.checkPeak("hostile peers beside healthy ones", 2*in.cfg.QueueBytes+64<<20)
}

// receiveInOrder reads n events from p, which must be event(1) to event(n)
// in order, and returns how long after start the last arrived (-1 if not
// within the test's wait after the send ended).
func receiveInOrder(t *testing.T, p *sim.Peer, n int, start time.Time) time.Duration {
	ctx := ctxFor(t, wait+time.Duration(n)*time.Millisecond)
	for i := 1; i <= n; i++ {
		b, err := p.Next(ctx)
		if err != nil {
			t.Errorf("event %d: %v", i, err)
			return -1
		}
		if !bytes.Contains(b, fmt.Appendf(nil, `"message_id":%d,`, i)) { // event(i), whose time may differ
			t.Errorf("frame %d: %.200s", i, b)
			return -1
		}
	}
	return time.Since(start)
}

// healthyCalls makes get_status calls one after the other until ctx is done,
// counting those answered, those that failed (1504) and the slowest.
func healthyCalls(ctx context.Context, p *sim.Peer, answered, failed, slowest *atomic.Int64) {
	for i := 0; ctx.Err() == nil; i++ {
		begin := time.Now()
		if p.Send(ctx, fmt.Appendf(nil, `{"action":"get_status","echo":%d}`, i)) != nil {
			return
		}
		for {
			b, err := p.Next(ctx)
			if err != nil {
				return
			}
			var r struct {
				Retcode *int            `json:"retcode"`
				Echo    json.RawMessage `json:"echo"`
			}
			if json.Unmarshal(b, &r) == nil && r.Retcode != nil && string(r.Echo) == fmt.Sprint(i) {
				if *r.Retcode == 0 {
					answered.Add(1)
				} else {
					failed.Add(1)
				}
				break
			}
		}
		if d := int64(time.Since(begin)); d > slowest.Load() {
			slowest.Store(d)
		}
	}
}

// floodCalls is a hostile target: on every connection obmux makes to it, it
// reads nothing and sends API calls of 1 MiB as fast as obmux takes them
// (the upstream never answers send_msg).
func floodCalls(ctx context.Context, tg *target, n *atomic.Int64) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case p := <-tg.Accepted:
			p.Pause()
			wg.Go(func() {
				defer p.Close()
				call := newBigCall(1 << 20)
				for i := 0; ctx.Err() == nil; i++ {
					if p.Send(ctx, call.setEcho(i%1000000)) != nil {
						return
					}
					n.Add(1)
				}
			})
		}
	}
}
