package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/obmux/obmux/config"
)

// The memory tests run obmux as a child process built without -race (a race
// build's memory says nothing about a real one's) and read its VmHWM: the
// peers around it, in the test process, are not counted.

var child struct {
	once sync.Once
	dir  string
	path string
	err  error
}

// obmuxBinary builds obmux once for the test binary.
func obmuxBinary(t *testing.T) string {
	t.Helper()
	child.once.Do(func() {
		child.dir, child.err = os.MkdirTemp("", "obmux-test-")
		if child.err != nil {
			return
		}
		child.path = filepath.Join(child.dir, "obmux")
		cmd := exec.Command("go", "build", "-o", child.path, ".")
		if out, err := cmd.CombinedOutput(); err != nil {
			child.err = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if child.err != nil {
		t.Fatal(child.err)
	}
	return child.path
}

// removeBinary removes what obmuxBinary built (from TestMain).
func removeBinary() {
	if child.dir != "" {
		os.RemoveAll(child.dir)
	}
}

// childInstance is obmux running as a child process.
type childInstance struct {
	*instance
	pid int
}

// startChild runs the obmux binary with env ("OBMUX_X=v") over the test
// defaults, waits until it serves, and stops it (SIGTERM) at the end of the
// test. Its metrics and addresses work as an in-process instance's do.
func startChild(t *testing.T, env ...string) *childInstance {
	t.Helper()
	bin := obmuxBinary(t)
	all := append([]string{"OBMUX_METRICS_LISTEN=127.0.0.1:0", "OBMUX_UPSTREAM_LISTEN=127.0.0.1:0",
		"OBMUX_LOG_FORMAT=json", "OBMUX_LOG_LEVEL=info", "OBMUX_RECONNECT_MIN=20ms", "OBMUX_RECONNECT_MAX=200ms",
		"OBMUX_SHUTDOWN_TIMEOUT=5s"}, env...)
	cfg, err := config.Load(all)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, config.Prefix) && !strings.HasPrefix(kv, "GOGC=") && !strings.HasPrefix(kv, "GOMEMLIMIT=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, all...)
	if g := os.Getenv("OBMUXTEST_GODEBUG"); g != "" {
		cmd.Env = append(cmd.Env, "GODEBUG="+g)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	in := &instance{t: t, done: make(chan error, 1), log: &logBuffer{}, cfg: cfg,
		cancel: func() { cmd.Process.Signal(syscall.SIGTERM) }}
	ready := make(chan listenAddrs, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			in.log.Write(append(line, '\n'))
			var l struct {
				Msg, Metrics, Forward, Upstream string
			}
			if json.Unmarshal(line, &l) == nil && l.Msg == "obmux serving" {
				a := listenAddrs{Metrics: l.Metrics, Forward: l.Forward}
				if s, ok := strings.CutPrefix(l.Upstream, "listen "); ok {
					a.Upstream, _, _ = strings.Cut(s, "/")
				}
				ready <- a
			}
		}
		io.Copy(io.Discard, stderr)
		in.done <- cmd.Wait()
	}()
	select {
	case in.addrs = <-ready:
	case err := <-in.done:
		t.Fatalf("obmux did not start: %v\n%s", err, in.log.String())
	case <-time.After(wait):
		cmd.Process.Kill()
		t.Fatalf("obmux did not start in %s:\n%s", wait, in.log.String())
	}
	t.Cleanup(func() {
		in.stop()
		if t.Failed() || os.Getenv("OBMUXTEST_GODEBUG") != "" {
			t.Logf("obmux log:\n%s", in.log.String())
		}
	})
	return &childInstance{instance: in, pid: cmd.Process.Pid}
}

// memory returns the child's resident memory now and its peak (VmRSS and
// VmHWM), in bytes.
func (c *childInstance) memory() (rss, peak int64) {
	c.t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.pid))
	if err != nil {
		c.t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = kb << 10
		case "VmHWM":
			peak = kb << 10
		}
	}
	return rss, peak
}

// checkPeak fails the test when the child's peak RSS went over limit, and
// logs it either way.
func (c *childInstance) checkPeak(what string, limit int64) {
	c.t.Helper()
	rss, peak := c.memory()
	c.t.Logf("%s: peak RSS %.1f MiB (now %.1f MiB), bound %d MiB", what, mib(peak), mib(rss), limit>>20)
	if peak > limit {
		c.t.Errorf("%s: obmux's peak RSS is %.1f MiB, over the %d MiB bound", what, mib(peak), limit>>20)
	}
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

// ctxFor returns a context that ends after d or at the end of the test.
func ctxFor(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// kill ends the child with SIGKILL, as the OOM killer or a power cut would,
// and waits until it is gone; the test's cleanup then has nothing to stop.
func (c *childInstance) kill() {
	c.once.Do(func() {
		if err := syscall.Kill(c.pid, syscall.SIGKILL); err != nil {
			c.t.Fatal(err)
		}
		<-c.done
	})
}
