package interop

import (
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// python is the system Python with Debian's python3-websockets (10.4 on
// bookworm); interop/run.sh installs the package when it is missing.
const python = "/usr/bin/python3"

// pyTarget is target.py running as a child.
type pyTarget struct {
	*proc
	port int64
}

// startPython runs target.py with args and waits until it listens.
func startPython(t *testing.T, args ...string) *pyTarget {
	t.Helper()
	if out, err := exec.Command(python, "-c", "import websockets").CombinedOutput(); err != nil {
		msg := fmt.Sprintf("%s cannot import websockets (%v: %s); interop/run.sh installs python3-websockets", python, err, out)
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	p := &pyTarget{proc: startProc(t, "target.py", baseEnv(), python, append([]string{"-u", "target.py"}, args...)...)}
	all := p.stdout.waitFor(t, "target.py to listen", wait, func(all []string) bool {
		return len(reports(all, "listening")) > 0
	})
	p.port = reports(all, "listening")[0].int("port")
	return p
}

func (p *pyTarget) url() string {
	return "ws://127.0.0.1:" + strconv.FormatInt(p.port, 10) + "/onebot/v11/ws"
}

// waitConnected waits for obmux's connection and checks its handshake: the
// X-Self-ID header and lifecycle connect as the first frame.
func (p *pyTarget) waitConnected(t *testing.T) {
	t.Helper()
	all := p.stdout.waitFor(t, "obmux to connect to target.py", wait, func(all []string) bool {
		return len(reports(all, "connected")) > 0
	})
	c := reports(all, "connected")[0]
	first, _ := c["first"].(map[string]any)
	if c.str("x_self_id") != strconv.Itoa(selfID) || c.str("path") != "/onebot/v11/ws" ||
		first["meta_event_type"] != "lifecycle" || first["sub_type"] != "connect" {
		t.Fatalf("target.py saw: %v", c)
	}
}

// count returns how many reports of each kind.
func count(all []string) map[string]int {
	n := map[string]int{}
	for _, r := range reports(all, "") {
		n[r.str("kind")]++
	}
	return n
}

// TestPythonKeepalive: target.py with websockets' keepalive at 200 ms, obmux
// pinging every 200 ms, heartbeats off, no events: an idle connection. Both
// sides' pings are answered for many periods and it stays up.
func TestPythonKeepalive(t *testing.T) {
	ctx := ctxWait(t)
	up := startUpstream(t)
	py := startPython(t, "--mode", "answer", "--ping-interval", "0.2", "--ping-timeout", "1")
	ob := startObmux(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_PY_URL="+py.url(),
		"OBMUX_PING_INTERVAL=200ms", "OBMUX_PING_TIMEOUT=1s", "OBMUX_HEARTBEAT_INTERVAL=0")
	up.conn(ctx)
	py.waitConnected(t)
	const periods = 10
	all := py.stdout.waitFor(t, fmt.Sprintf("%d pings each way", periods), wait, func(all []string) bool {
		n := count(all)
		return n["ping_in"] >= periods && n["pong_out"] >= periods && n["keepalive_pong"] >= periods
	})
	n := count(all)
	t.Logf("target.py: %v", n)
	for _, bad := range []string{"keepalive_timeout", "closed", "frame"} {
		if n[bad] != 0 {
			t.Errorf("target.py reported %d %q, want none", n[bad], bad)
		}
	}
	target := []string{"role=target", "name=py"}
	if v, _ := ob.metric("obmux_connects_total", target...); v != 1 {
		t.Errorf("obmux_connects_total{target py} = %v, want 1", v)
	}
	if v, _ := ob.metric("obmux_disconnects_total", target...); v != 0 {
		t.Errorf("obmux_disconnects_total{target py} = %v, want 0", v)
	}
	if v, _ := ob.metric("obmux_connection_up", target...); v != 1 {
		t.Errorf("obmux_connection_up{target py} = %v, want 1", v)
	}
	// Idle: the only data frame obmux wrote is lifecycle connect.
	if v, _ := ob.metric("obmux_frames_total", "role=target", "name=py", "direction=out"); v != 1 {
		t.Errorf("obmux_frames_total{target py, out} = %v, want 1 (lifecycle connect only)", v)
	}
	if v, found := ob.metric("obmux_ping_rtt_seconds", target...); !found || v <= 0 || v > 1 {
		t.Errorf("obmux_ping_rtt_seconds{target py} = %v (found %v), want a round trip", v, found)
	}
}

// TestPythonStalled: target.py blocks its event loop after the greeting, so
// websockets stops reading and answering pings; obmux must close the
// connection by its ping timeout.
func TestPythonStalled(t *testing.T) {
	ctx := ctxWait(t)
	const interval, timeout = 200 * time.Millisecond, 400 * time.Millisecond
	// Scheduling, a race-built obmux and the 20 ms scrape interval.
	const slack = 2 * time.Second
	up := startUpstream(t)
	py := startPython(t, "--mode", "stall", "--stall", "60", "--ping-interval", "0.2", "--ping-timeout", "0.5")
	ob := startObmux(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_PY_URL="+py.url(),
		"OBMUX_PING_INTERVAL="+interval.String(), "OBMUX_PING_TIMEOUT="+timeout.String(), "OBMUX_HEARTBEAT_INTERVAL=0")
	up.conn(ctx)
	py.waitConnected(t)
	py.stdout.waitFor(t, "target.py to stall", wait, func(all []string) bool { return len(reports(all, "stalling")) > 0 })
	stalled := time.Now()

	ob.waitMetric("obmux to drop the stalled target for keepalive timeout", wait, func(v float64) bool { return v >= 1 },
		"obmux_disconnects_total", "role=target", "name=py", "reason=keepalive_timeout")
	took := time.Since(stalled)
	t.Logf("keepalive timeout %v after the stall began", took.Round(time.Millisecond))
	if took > interval+timeout+slack {
		t.Errorf("obmux took %v to notice, want at most ping interval %v + timeout %v + %v", took, interval, timeout, slack)
	}
	if v, _ := ob.metric("obmux_disconnects_total", "role=target", "name=py"); v != 1 {
		t.Errorf("obmux_disconnects_total{target py} = %v, want 1 (keepalive_timeout only)", v)
	}
	all := ob.stderr.waitFor(t, "obmux to log the disconnect", wait, func(all []string) bool {
		return len(obmuxLog(all, "target disconnected")) > 0
	})
	rec := obmuxLog(all, "target disconnected")[0]
	if rec.str("name") != "py" || rec.str("reason") != "keepalive_timeout" || !strings.Contains(rec.str("error"), "keepalive timeout") {
		t.Errorf("obmux logged %v, want target py, reason keepalive_timeout, error ...keepalive timeout", rec)
	}
}
