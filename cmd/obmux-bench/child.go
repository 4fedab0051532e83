package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/obmux/obmux/internal/sim"
)

// relayChild is one relay (obmux or the baseline) running as a child process.
type relayChild struct {
	name    string
	cmd     *exec.Cmd
	metrics string // host:port of its metrics listener
	pprof   string // host:port of its pprof listener, if profiling
	exited  chan struct{}

	logMu sync.Mutex
	log   []string // the last lines of its stderr
}

// relaySpec says how to start a relay.
type relaySpec struct {
	name string   // "obmux", "baseline", "obmux-nats"
	path string   // executable
	args []string // its arguments
	env  []string // extra environment (before the scenario's)
	dir  string   // a directory for its files (obmux-nats: JetStream's store)
}

// startRelay starts spec with the environment a user would set for it.
func startRelay(spec relaySpec, upstreamURL string, targetURLs []string, extra []string, profile bool) (*relayChild, error) {
	metrics, err := sim.FreeAddr()
	if err != nil {
		return nil, err
	}
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "OBMUX_") && !strings.HasPrefix(kv, "BENCH_") {
			env = append(env, kv)
		}
	}
	env = append(env, spec.env...)
	env = append(env,
		"OBMUX_UPSTREAM_URL="+upstreamURL,
		"OBMUX_SELF_ID="+strconv.Itoa(selfID),
		"OBMUX_METRICS_LISTEN="+metrics,
		"OBMUX_LOG_FORMAT=json",
		"OBMUX_LOG_LEVEL=warn",
	)
	for i, u := range targetURLs {
		env = append(env, fmt.Sprintf("OBMUX_TARGET_%s_URL=%s", targetName(i), u))
	}
	env = append(env, extra...)
	c := &relayChild{name: spec.name, metrics: metrics, exited: make(chan struct{})}
	if profile {
		if c.pprof, err = sim.FreeAddr(); err != nil {
			return nil, err
		}
		env = append(env, pprofEnv+"="+c.pprof)
	}
	c.cmd = exec.Command(spec.path, spec.args...)
	c.cmd.Env = env
	c.cmd.Stdout = io.Discard
	stderr, err := c.cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", spec.name, err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			c.logMu.Lock()
			c.log = append(c.log, sc.Text())
			if len(c.log) > 200 {
				c.log = c.log[len(c.log)-100:]
			}
			c.logMu.Unlock()
		}
		io.Copy(io.Discard, stderr)
		c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// logTail returns the child's last stderr lines.
func (c *relayChild) logTail(n int) string {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	l := c.log
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

// countLog counts stderr lines (of the last ones kept) containing s.
func (c *relayChild) countLog(s string) int {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	n := 0
	for _, l := range c.log {
		if strings.Contains(l, s) {
			n++
		}
	}
	return n
}

// stop ends the child: SIGTERM, then SIGKILL after a grace period.
func (c *relayChild) stop() {
	select {
	case <-c.exited:
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(3 * time.Second):
		c.cmd.Process.Kill()
		<-c.exited
	}
}

// alive reports an error if the child has exited.
func (c *relayChild) alive() error {
	select {
	case <-c.exited:
		return fmt.Errorf("%s exited (%v):\n%s", c.name, c.cmd.ProcessState, c.logTail(20))
	default:
		return nil
	}
}

// procSample is what /proc says about the child at one moment.
type procSample struct {
	at       time.Time
	cpuTicks int64 // utime+stime in clock ticks
	minflt   int64 // minor page faults
	rss, hwm int64 // bytes
}

// clkTck is USER_HZ; 100 on every Linux this runs on.
const clkTck = 100

func (c *relayChild) sample() (procSample, error) {
	s := procSample{at: time.Now()}
	pid := c.cmd.Process.Pid
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return s, err
	}
	// Fields after the command name, which is in parentheses.
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return s, errors.New("bad /proc stat")
	}
	f := strings.Fields(string(stat[i+1:]))
	// f[0] is field 3 (state); utime is field 14, stime 15.
	if len(f) < 13 {
		return s, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	s.cpuTicks = ut + st
	s.minflt, _ = strconv.ParseInt(f[7], 10, 64) // field 10
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return s, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			s.rss = kb << 10
		case "VmHWM":
			s.hwm = kb << 10
		}
	}
	return s, nil
}

// httpClient keeps no idle connections behind.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

// allocBytes reads go_memstats_alloc_bytes_total from the child's /metrics.
func (c *relayChild) allocBytes() (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+c.metrics+"/metrics", nil)
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_alloc_bytes_total "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, errors.New("no go_memstats_alloc_bytes_total in /metrics")
}

// profile fetches a profile (profile: CPU, allocs: allocations) of the child
// over the next d into path.
func (c *relayChild) profile(kind string, d time.Duration, path string) error {
	secs := max(int(d.Round(time.Second)/time.Second), 1)
	return c.fetchProfile(fmt.Sprintf("%s?seconds=%d", kind, secs), path)
}

// fetchProfile saves /debug/pprof/<query> of the child into path: a
// profile over a time (profile?seconds=N) or as it is now (heap).
func (c *relayChild) fetchProfile(query, path string) error {
	resp, err := httpClient.Get(fmt.Sprintf("http://%s/debug/pprof/%s", c.pprof, query))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("pprof: %s: %s", resp.Status, b)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// pprofEnv, when set in a relay's environment, makes it serve net/http/pprof
// at that address: the baseline always can, obmux only when built with the
// overlay below (-profile), so the measured binary is otherwise exactly the
// one users run.
const pprofEnv = "BENCH_PPROF_LISTEN"

const pprofOverlay = `package main

import (
	"net/http"
	"net/http/pprof"
	"os"
)

func init() {
	addr := os.Getenv("` + pprofEnv + `")
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	go http.ListenAndServe(addr, mux)
}
`

// buildObmux builds ./cmd/obmux into dir and returns the binary's path. With
// profile, a file serving pprof is added to package main through -overlay
// (the source tree is not touched).
func buildObmux(dir string, profile bool) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	out := filepath.Join(dir, "obmux")
	args := []string{"build", "-o", out}
	if profile {
		src := filepath.Join(dir, "zz_bench_pprof.go")
		if err := os.WriteFile(src, []byte(pprofOverlay), 0o644); err != nil {
			return "", err
		}
		ov, _ := json.Marshal(map[string]map[string]string{"Replace": {filepath.Join(root, "cmd", "obmux", "zz_bench_pprof.go"): src}})
		ovPath := filepath.Join(dir, "overlay.json")
		if err := os.WriteFile(ovPath, ov, 0o644); err != nil {
			return "", err
		}
		args = append(args, "-overlay", ovPath)
	}
	args = append(args, "./cmd/obmux")
	cmd := exec.Command("go", args...)
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/obmux: %v\n%s", err, b)
	}
	return out, nil
}

// moduleRoot finds the obmux module's directory from the working directory.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", errors.New("not inside the obmux module: run from its directory or pass -obmux")
	}
	return filepath.Dir(mod), nil
}

// targetName is the name of the i-th target in the relay's environment.
func targetName(i int) string { return fmt.Sprintf("T%04d", i) }
