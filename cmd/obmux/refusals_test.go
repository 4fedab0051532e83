package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"

	"github.com/obmux/obmux/internal/sim"
)

// rawUpgrade sends a WebSocket upgrade request to addr as a browser would,
// with the Host and Origin given ("" for none), and returns the status.
func rawUpgrade(t *testing.T, addr, path, host, origin string) int {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := "GET " + path + " HTTP/1.1\r\nHost: " + host + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nX-Self-ID: 10001\r\n"
	if origin != "" {
		req += "Origin: " + origin + "\r\n"
	}
	if _, err := io.WriteString(c, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", addr, path, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// A browser page may open a WebSocket to obmux only from its own origin and
// by a Host that cannot be rebound: loopback, an IP address, or a name in
// OBMUX_ALLOWED_HOSTS. DNS rebinding (Host evil.example:port with Origin
// http://evil.example:port) gets 403 on both WebSocket listeners; bots,
// which send no Origin, are not affected.
func TestOriginRefusesDNSRebinding(t *testing.T) {
	in := start(t, "OBMUX_FORWARD_LISTEN=127.0.0.1:0", "OBMUX_ALLOWED_HOSTS=bot.example, Obmux.LAN")
	up, _, err := sim.Dial(ctxT(t), "ws://"+in.addrs.Upstream+"/onebot/v11/ws",
		http.Header{"X-Self-ID": {"10001"}, "X-Client-Role": {"Universal"}})
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()
	eventually(t, "obmux ready", func() bool { code, _ := in.get("/readyz"); return code == http.StatusOK })
	type check struct {
		host, origin string
		want         int
	}
	checks := func(port string) []check {
		return []check{
			{"evil.example:" + port, "http://evil.example:" + port, http.StatusForbidden}, // DNS rebinding
			{"EVIL.example:" + port, "https://evil.example:" + port, http.StatusForbidden},
			{"127.0.0.1:" + port, "http://evil.example:" + port, http.StatusForbidden}, // another origin
			{"127.0.0.1:" + port, "null", http.StatusForbidden},
			{"127.0.0.1:" + port, "http://127.0.0.1:" + port, http.StatusSwitchingProtocols},
			{"[::1]:" + port, "http://[::1]:" + port, http.StatusSwitchingProtocols},
			{"localhost:" + port, "http://localhost:" + port, http.StatusSwitchingProtocols},
			{"bot.example:" + port, "https://bot.example:" + port, http.StatusSwitchingProtocols}, // OBMUX_ALLOWED_HOSTS
			{"obmux.lan:" + port, "http://obmux.lan:" + port, http.StatusSwitchingProtocols},
			{"evil.example:" + port, "", http.StatusSwitchingProtocols}, // no Origin: a bot
		}
	}
	refused := 0
	for _, l := range []struct{ name, addr, path string }{{"forward", in.addrs.Forward, "/"},
		{"upstream", in.addrs.Upstream, "/onebot/v11/ws"}} {
		_, port, _ := net.SplitHostPort(l.addr)
		for _, c := range checks(port) {
			if got := rawUpgrade(t, l.addr, l.path, c.host, c.origin); got != c.want {
				t.Errorf("%s: Host %s, Origin %q: HTTP %d, want %d", l.name, c.host, c.origin, got, c.want)
			}
			if c.want == http.StatusForbidden {
				refused++
			}
		}
		if got := in.metric("obmux_auth_failures_total", "listener="+l.name, "reason=bad_origin"); got != 4 {
			t.Errorf("%s: obmux_auth_failures_total{reason=bad_origin} = %v, want 4", l.name, got)
		}
	}
	if refused != 8 {
		t.Fatalf("%d refusals checked", refused)
	}
}

// 5000 requests with a wrong token cost a handful of warn lines (once per
// remote address and reason per minute) and are all counted; every distinct
// wrong upstream path is logged once, each.
func TestRefusalsLoggedOncePerAddressAndReason(t *testing.T) {
	in := start(t, "OBMUX_FORWARD_LISTEN=127.0.0.1:0", "OBMUX_FORWARD_TOKEN=right", "OBMUX_UPSTREAM_TOKEN=right")
	const n, workers = 5000, 8
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Go(func() {
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			defer client.CloseIdleConnections()
			for range n / workers {
				req, _ := http.NewRequest(http.MethodGet, "http://"+in.addrs.Forward+"/", nil)
				req.Header.Set("Authorization", "Bearer wrong")
				resp, err := client.Do(req)
				if err != nil {
					errs <- err
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusForbidden {
					errs <- fmt.Errorf("HTTP %d, want 403", resp.StatusCode)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	get := func(addr, path string, want int, header ...string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+addr+path, nil)
		for i := 0; i+1 < len(header); i += 2 {
			req.Header.Set(header[i], header[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s%s: HTTP %d, want %d", addr, path, resp.StatusCode, want)
		}
	}
	for range 10 {
		get(in.addrs.Upstream, "/onebot/v11/ws", http.StatusUnauthorized)
		for _, p := range []string{"/onebot/v11", "/ws", "/onebot/v11/ws/"} {
			get(in.addrs.Upstream, p, http.StatusNotFound)
		}
		get(in.addrs.Forward, "/onebot/v11/ws", http.StatusNotFound)
		// The right token, but no WebSocket handshake (a browser, a
		// scanner), a split connection, an X-Self-ID that is no QQ number.
		get(in.addrs.Upstream, "/onebot/v11/ws", http.StatusUpgradeRequired, "Authorization", "Bearer right")
		get(in.addrs.Upstream, "/onebot/v11/ws", http.StatusBadRequest, "Authorization", "Bearer right", "X-Client-Role", "Event")
		get(in.addrs.Upstream, "/onebot/v11/ws", http.StatusBadRequest, "Authorization", "Bearer right", "X-Self-ID", "bot")
	}
	if got := in.metric("obmux_auth_failures_total", "listener=forward", "reason=wrong_token"); got != n {
		t.Errorf("forward wrong_token refusals counted: %v, want %d", got, n)
	}
	for _, c := range []struct {
		listener, reason string
		want             float64
	}{{"upstream", "missing_token", 10}, {"upstream", "wrong_path", 30}, {"forward", "wrong_path", 10},
		{"upstream", "bad_handshake", 10}, {"upstream", "not_universal", 10}, {"upstream", "bad_self_id", 10}} {
		if got := in.metric("obmux_auth_failures_total", "listener="+c.listener, "reason="+c.reason); got != c.want {
			t.Errorf("%s %s refusals counted: %v, want %v", c.listener, c.reason, got, c.want)
		}
	}
	log := in.log.String()
	for _, c := range []struct {
		msg  string
		want int
	}{
		{"forward client refused", 1},
		{"upstream connection refused", 1},
		{"upstream connection refused: not a WebSocket handshake", 1},
		{"upstream connection refused: not a universal connection", 1},
		{"upstream connection refused: X-Self-ID is not a QQ number (HTTP 400)", 1},
		{"upstream connection on a wrong path (HTTP 404)", 3},
		{"forward client on a wrong path (HTTP 404)", 1},
	} {
		if n := warnings(log, c.msg, ""); n != c.want {
			t.Errorf("%q: %d warn lines, want %d", c.msg, n, c.want)
		}
	}
}
