package main

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/internal/sim"
)

// The hold scenario (issue 17 §3; -run hold, not in the default suite):
// obmux holds sc.Targets idle targets and sc.Clients idle forward-WS clients
// on "/" at its default keepalive (heartbeats every 5 s, pings every 20 s),
// and the run measures its CPU over sc.Duration (by default one ping
// interval) and its RSS. Only obmux: the baseline has no forward-WS server.

// holdEnv is obmux's extra environment in a hold run: a forward-WS
// listener at fwd that takes every client.
func holdEnv(fwd string, clients int) []string {
	return []string{"OBMUX_FORWARD_LISTEN=" + fwd, fmt.Sprintf("OBMUX_FORWARD_MAX_CLIENTS=%d", clients+16)}
}

// fwdClients are idle forward-WS clients: each reads (and so answers
// obmux's pings) and counts the meta events it gets.
type fwdClients struct {
	conns []*websocket.Conn
	meta  atomic.Uint64
	wg    sync.WaitGroup
}

// dialClients connects n clients to url, each once greeted (its lifecycle
// connect read) before the next is dialed.
func dialClients(ctx context.Context, url string, n int) (*fwdClients, error) {
	fc := &fwdClients{}
	for range n {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ws, _, err := websocket.Dial(ctx, url, nil)
		cancel()
		if err != nil {
			fc.close()
			return nil, fmt.Errorf("forward client %d: %w", len(fc.conns)+1, err)
		}
		fc.conns = append(fc.conns, ws)
		greeted := make(chan struct{})
		fc.wg.Go(func() { fc.read(ws, greeted) })
		select {
		case <-greeted:
		case <-time.After(10 * time.Second):
			fc.close()
			return nil, fmt.Errorf("forward client %d: no lifecycle connect within 10s", len(fc.conns))
		}
	}
	return fc, nil
}

func (fc *fwdClients) read(ws *websocket.Conn, greeted chan struct{}) {
	buf := make([]byte, 512)
	first := true
	for {
		_, r, err := ws.Reader(context.Background())
		if err != nil {
			return
		}
		for err == nil {
			_, err = r.Read(buf)
		}
		if err != io.EOF {
			return
		}
		fc.meta.Add(1)
		if first {
			first = false
			close(greeted)
		}
	}
}

func (fc *fwdClients) close() {
	for _, ws := range fc.conns {
		ws.CloseNow()
	}
	fc.wg.Wait()
}

// hold connects the clients, lets everything settle, then measures obmux's
// CPU and RSS and the heartbeats every peer got over sc.Duration (profiled
// over the same window when profiles are asked for).
func (r *run) hold(res *result) error {
	fc, err := dialClients(r.ctx, "ws://"+r.fwd+"/", r.sc.Clients)
	if err != nil {
		return err
	}
	defer fc.close()
	heartbeats := func() uint64 {
		n := fc.meta.Load()
		for _, t := range r.ts.list {
			n += t.meta.Load()
		}
		return n
	}
	select {
	case <-time.After(r.sc.Warmup):
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	s0, err := r.child.sample()
	if err != nil {
		return err
	}
	h0 := heartbeats()
	prof := r.startProfile() // CPU and allocations over the window, with -profile
	select {
	case <-time.After(r.sc.Duration):
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
	s1, err := r.child.sample()
	if err != nil {
		return err
	}
	if err := <-prof; err != nil {
		return fmt.Errorf("profile: %w", err)
	}
	res.Seconds = s1.at.Sub(s0.at).Seconds()
	res.CPUPercent = 100 * float64(s1.cpuTicks-s0.cpuTicks) / clkTck / res.Seconds
	res.RSS, res.PeakRSS = s1.rss, s1.hwm
	res.Heartbeats = heartbeats() - h0
	return nil
}

// freeForward picks the forward-WS listener's address of a hold run.
func freeForward() (string, error) { return sim.FreeAddr() }

// printHold prints the hold runs: a row each.
func printHold(tw *tabwriter.Writer, rep *report, section func(title, header string)) {
	first := true
	for _, r := range rep.Results {
		if r.Scenario.Kind != "hold" {
			continue
		}
		if first {
			section("Idle targets and forward clients held at the default keepalive (heartbeat 5s, ping 20s)",
				"relay\ttargets\tforward clients\tseconds\tCPU % of one core\tRSS\tpeak RSS\theartbeats received\texpected\t")
			first = false
		}
		expect := float64(r.Scenario.Targets+r.Scenario.Clients) * r.Seconds / 5
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.1f\t%.2f\t%s\t%s\t%d\t~%.0f\t\n", r.Relay, r.Scenario.Targets, r.Scenario.Clients, r.Seconds,
			r.CPUPercent, mib(r.RSS), mib(r.PeakRSS), r.Heartbeats, expect)
	}
}
