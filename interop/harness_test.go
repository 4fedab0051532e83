// Package interop tests obmux with OneBot software that others wrote: ZeroBot
// (Go) and a Python websockets peer. obmux, the ZeroBot bots and the Python
// script each run as a child process; the test upstream (a OneBot
// implementation's forward-WS server) runs in the test.
package interop

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// wait bounds every wait for one thing to happen.
const wait = 20 * time.Second

// bin holds the binaries TestMain builds.
var bin struct{ dir, obmux, zerobot string }

func TestMain(m *testing.M) { os.Exit(testMain(m)) }

func testMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "obmux-interop-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bin.dir = dir
	bin.obmux = filepath.Join(dir, "obmux")
	bin.zerobot = filepath.Join(dir, "zerobot-target")
	// Under -race the children are race-built too, so obmux is raced while
	// real clients drive it; a race report in a child fails the test.
	var race []string
	if raceEnabled {
		race = []string{"-race"}
	}
	builds := []struct{ dir, out, pkg string }{
		{"..", bin.obmux, "./cmd/obmux"},
		{".", bin.zerobot, "./cmd/zerobot-target"},
	}
	for _, b := range builds {
		args := append(append([]string{"build"}, race...), "-o", b.out, b.pkg)
		cmd := exec.Command(goTool(), args...)
		cmd.Dir = b.dir
		if out, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "go %s (in %s): %v\n%s", strings.Join(args, " "), b.dir, err, out)
			return 1
		}
	}
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			return 1
		}
	}
	return code
}

func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// lines collects a stream line by line and wakes waiters on every line.
type lines struct {
	mu      sync.Mutex
	partial []byte
	all     []string
	changed chan struct{}
}

func newLines() *lines { return &lines{changed: make(chan struct{})} }

func (l *lines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.partial = append(l.partial, p...)
	added := false
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.all = append(l.all, string(l.partial[:i]))
		l.partial = l.partial[i+1:]
		added = true
	}
	if added {
		close(l.changed)
		l.changed = make(chan struct{})
	}
	return len(p), nil
}

// snapshot returns the lines so far and a channel closed on the next line.
func (l *lines) snapshot() ([]string, <-chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.all[:len(l.all):len(l.all)], l.changed
}

func (l *lines) String() string {
	all, _ := l.snapshot()
	return strings.Join(all, "\n")
}

// waitFor waits until cond holds for the lines so far, and returns them.
func (l *lines) waitFor(t *testing.T, what string, timeout time.Duration, cond func(all []string) bool) []string {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		all, changed := l.snapshot()
		if cond(all) {
			return all
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
	}
}

// report is one JSON line a child prints (zerobot-target and target.py).
type report map[string]any

func (r report) str(k string) string {
	switch v := r[k].(type) {
	case string:
		return v
	case nil:
		return ""
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}

func (r report) int(k string) int64 {
	n, _ := strconv.ParseInt(r.str(k), 10, 64)
	return n
}

// reports parses the JSON lines among all, keeping those of kind.
func reports(all []string, kind string) []report {
	var out []report
	for _, s := range all {
		var r report
		if json.Unmarshal([]byte(s), &r) == nil && (kind == "" || r.str("kind") == kind) {
			out = append(out, r)
		}
	}
	return out
}

// proc is a child process; its stdout and stderr are kept line by line.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout *lines
	stderr *lines
	done   chan struct{}
	err    error
	once   sync.Once
}

// startProc starts a child and ends it (SIGTERM, then SIGKILL) when the test
// ends; its output is logged if the test failed, or always with INTEROP_LOGS=1.
func startProc(t *testing.T, name string, env []string, path string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, cmd: exec.Command(path, args...), stdout: newLines(), stderr: newLines(), done: make(chan struct{})}
	// A race-built child sleeps 1 s at exit by default.
	p.cmd.Env = append(env[:len(env):len(env)], "GORACE=atexit_sleep_ms=0")
	p.cmd.Stdout = p.stdout
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() || os.Getenv("INTEROP_LOGS") != "" {
			t.Logf("%s stdout:\n%s", name, p.stdout)
			t.Logf("%s stderr:\n%s", name, p.stderr)
		}
		if strings.Contains(p.stderr.String(), "WARNING: DATA RACE") {
			t.Errorf("%s reported a data race", name)
		}
	})
	return p
}

// stop sends SIGTERM and waits for the process to end; after a deadline it
// is killed and the test fails. It returns the exit error.
func (p *proc) stop(t *testing.T) error {
	p.once.Do(func() {
		begin := time.Now()
		defer func() {
			t.Logf("%s ended %v after SIGTERM: %v", p.name, time.Since(begin).Round(time.Millisecond), p.err)
		}()
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(wait):
			t.Errorf("%s did not exit within %v of SIGTERM; killing it", p.name, wait)
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
	<-p.done
	return p.err
}

// baseEnv is the environment without any OBMUX_ variable.
func baseEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OBMUX_") {
			env = append(env, kv)
		}
	}
	return env
}

// obmux is the obmux binary running as a child.
type obmux struct {
	*proc
	t       *testing.T
	metrics string // host:port of /metrics
	forward string // host:port of the forward-WS server, if on
}

// startObmux runs obmux with env ("OBMUX_X=v") over test defaults, waits
// until it serves and stops it (SIGTERM, graceful) at the end of the test,
// which fails unless it exits 0.
func startObmux(t *testing.T, env ...string) *obmux {
	t.Helper()
	full := append(baseEnv(), "OBMUX_METRICS_LISTEN=127.0.0.1:0", "OBMUX_LOG_FORMAT=json", "OBMUX_LOG_LEVEL=debug",
		"OBMUX_RECONNECT_MIN=20ms", "OBMUX_RECONNECT_MAX=500ms", "OBMUX_SHUTDOWN_TIMEOUT=5s")
	full = append(full, env...)
	o := &obmux{t: t, proc: startProc(t, "obmux", full, bin.obmux)}
	t.Cleanup(func() {
		if err := o.stop(t); err != nil {
			t.Errorf("obmux exited with %v after SIGTERM, want status 0", err)
		}
	})
	all := o.stderr.waitFor(t, "obmux to serve", wait, func(all []string) bool {
		return len(obmuxLog(all, "obmux serving")) > 0
	})
	serving := obmuxLog(all, "obmux serving")[0]
	o.metrics, o.forward = serving.str("metrics"), serving.str("forward")
	return o
}

// obmuxLog returns obmux's JSON log records whose msg is msg.
func obmuxLog(all []string, msg string) []report {
	var out []report
	for _, r := range reports(all, "") {
		if r.str("msg") == msg {
			out = append(out, r)
		}
	}
	return out
}

// series is one sample of a /metrics scrape.
type series struct {
	name   string
	labels map[string]string
	value  float64
}

// scrape reads /metrics in the text format.
func (o *obmux) scrape() []series {
	o.t.Helper()
	resp, err := http.Get("http://" + o.metrics + "/metrics")
	if err != nil {
		o.t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		o.t.Fatalf("scrape: %v", err)
	}
	var out []series
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		s := series{name: line[:i], labels: map[string]string{}, value: v}
		if j := strings.IndexByte(s.name, '{'); j >= 0 {
			for _, kv := range strings.Split(strings.TrimSuffix(s.name[j+1:], "}"), ",") {
				k, val, ok := strings.Cut(kv, "=")
				if ok {
					s.labels[k] = strings.Trim(val, `"`)
				}
			}
			s.name = s.name[:j]
		}
		out = append(out, s)
	}
	return out
}

// metric sums the samples of name whose labels include want ("k=v" pairs);
// found is false when there is none.
func (o *obmux) metric(name string, want ...string) (sum float64, found bool) {
	o.t.Helper()
	for _, s := range o.scrape() {
		if s.name != name || !hasLabels(s.labels, want) {
			continue
		}
		sum += s.value
		found = true
	}
	return sum, found
}

func hasLabels(labels map[string]string, want []string) bool {
	for _, kv := range want {
		k, v, _ := strings.Cut(kv, "=")
		if labels[k] != v {
			return false
		}
	}
	return true
}

// waitMetric polls /metrics every 20 ms until cond holds for the sum of the
// matching samples.
func (o *obmux) waitMetric(what string, timeout time.Duration, cond func(float64) bool, name string, labels ...string) float64 {
	o.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		v, _ := o.metric(name, labels...)
		if cond(v) {
			return v
		}
		if time.Now().After(deadline) {
			o.t.Fatalf("timed out after %v waiting for %s (%s%v = %v)", timeout, what, name, labels, v)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitReady waits until /readyz answers 200 (upstream connected, self_id
// known).
func (o *obmux) waitReady() {
	o.t.Helper()
	deadline := time.Now().Add(wait)
	for {
		resp, err := http.Get("http://" + o.metrics + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			o.t.Fatalf("obmux not ready after %v", wait)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func ctxWait(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	t.Cleanup(cancel)
	return ctx
}
