package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/obmux/obmux/internal/sim"
)

// Tests of obmux's HTTP listeners against hostile clients (issue 13, item
// 4): requests whose body never comes, many connections at once, shutdown
// with such requests open.

// bodyless opens n connections to addr that each send a request's headers
// with Content-Length: 1000 and no body, and returns them.
func bodyless(t *testing.T, addr, path string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	for range n {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: "+addr+"\r\nContent-Length: 1000\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	return conns
}

// closedByPeer reports whether obmux closed c within d (reading whatever
// response came first).
func closedByPeer(c net.Conn, d time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// Connections that send a request's headers with Content-Length: 1000 and
// never the body are closed after OBMUX_HTTP_TIMEOUT on every listener,
// while upgraded WebSockets on the same listeners, older than the timeout,
// keep working.
func TestBodylessRequestsAreClosed(t *testing.T) {
	tg := newTarget(t)
	in := start(t, "OBMUX_HTTP_TIMEOUT=300ms", "OBMUX_FORWARD_LISTEN=127.0.0.1:0", "OBMUX_TARGET_A_URL="+tg.URL,
		"OBMUX_HEARTBEAT_INTERVAL=0")
	up, _, err := sim.Dial(ctxT(t), "ws://"+in.addrs.Upstream+"/onebot/v11/ws",
		http.Header{"X-Self-ID": {"10001"}, "X-Client-Role": {"Universal"}})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	up.Send(ctxT(t), sim.Lifecycle(testSelfID, "connect"))
	p := tg.accept()
	eventually(t, "obmux ready", func() bool { code, _ := in.get("/readyz"); return code == http.StatusOK })
	client := dialForward(t, in, "/", nil)

	var conns []net.Conn
	for _, l := range []struct{ addr, path string }{{in.addrs.Metrics, "/metrics"}, {in.addrs.Upstream, "/onebot/v11/ws"},
		{in.addrs.Forward, "/"}} {
		conns = append(conns, bodyless(t, l.addr, l.path, 20)...)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	open := 0
	for _, c := range conns {
		wg.Go(func() {
			if !closedByPeer(c, wait) {
				mu.Lock()
				open++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if open > 0 {
		t.Fatalf("%d of %d connections without a body still open after %v", open, len(conns), wait)
	}
	// The WebSockets upgraded before are still up, well past the timeout.
	up.Send(ctxT(t), event(1))
	if got := nextEvent(t, p); !bytes.Equal(got, event(1)) {
		t.Fatalf("target got %s", got)
	}
	if got := client.until("event"); !bytes.Equal(got, event(1)) {
		t.Fatalf("client got %s", got)
	}
}

// SIGTERM while clients hold requests without their body open on the
// listeners: every target and client still gets lifecycle disable and close
// 1001, and obmux exits well within OBMUX_SHUTDOWN_TIMEOUT.
func TestShutdownWithBodylessRequestsOpen(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	a, b := newTarget(t), newTarget(t)
	in := startChild(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+a.URL, "OBMUX_TARGET_B_URL="+b.URL,
		"OBMUX_FORWARD_LISTEN=127.0.0.1:0", "OBMUX_SHUTDOWN_TIMEOUT=5s", "OBMUX_HTTP_TIMEOUT=1m", "OBMUX_HEARTBEAT_INTERVAL=0")
	u := up.connected()
	pa, pb := a.accept(), b.accept()
	eventually(t, "obmux ready", func() bool { code, _ := in.get("/readyz"); return code == http.StatusOK })
	client := dialForward(t, in.instance, "/", nil)
	bodyless(t, in.addrs.Forward, "/", 5)
	bodyless(t, in.addrs.Metrics, "/metrics", 5)
	// The requests are in: their handlers ran (the forward ones refused).
	eventually(t, "the requests served", func() bool {
		return in.metric("obmux_connection_up", "role=client") == 1
	})
	took := in.stop()
	checkTargetShutDown(t, "a", pa)
	checkTargetShutDown(t, "b", pb)
	client.drain()
	client.checkClosedForShutdown()
	checkUpstreamShutDown(t, u)
	t.Logf("shutdown took %v", took)
	if took > 3*time.Second {
		t.Errorf("shutdown took %v with requests open, want well under OBMUX_SHUTDOWN_TIMEOUT=5s", took)
	}
}

// With few file descriptors (ulimit -n 256), 600 connections that never
// finish a request on the forward-WS listener do not starve obmux: each
// listener serves a bounded number of connections at once, so obmux still
// redials its upstream, events still reach the target and the metrics
// listener still answers.
func TestListenersCapConnections(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	tg := newTarget(t)
	in := startChild(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_A_URL="+tg.URL, "OBMUX_FORWARD_LISTEN=127.0.0.1:0",
		"OBMUX_FORWARD_MAX_CLIENTS=16", "OBMUX_HTTP_TIMEOUT=1m", "OBMUX_HEARTBEAT_INTERVAL=0")
	u := up.connected()
	p := tg.accept()
	lim := unix.Rlimit{Cur: 256, Max: 256}
	if err := unix.Prlimit(in.pid, unix.RLIMIT_NOFILE, &lim, nil); err != nil {
		t.Skipf("cannot lower obmux's file limit: %v", err)
	}
	bodyless(t, in.addrs.Forward, "/", 600)
	// obmux has accepted what it will: a request on its own listener is
	// answered after the flood's.
	if code, _ := in.get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz answered %d", code)
	}
	u.Close() // obmux must redial, with a descriptor of its own
	up.connected()
	up.send(event(1))
	if got := nextEvent(t, p); !bytes.Equal(got, event(1)) {
		t.Fatalf("target got %s", got)
	}
	if code, _ := in.get("/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz answered %d", code)
	}
}
