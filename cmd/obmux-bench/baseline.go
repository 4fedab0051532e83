package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"sync"
	"syscall"

	"github.com/coder/websocket"
)

// baselineEnv, set to 1, makes this executable the baseline relay instead of
// the bench (the bench re-executes itself with it).
const baselineEnv = "BENCH_BASELINE_RELAY"

// baselineQueue is each target's channel capacity. A target whose channel is
// full is disconnected (it is not redialed): a stuck target then cannot hold
// up the others, and the bench's in-flight window keeps a saturating run far
// below it.
const baselineQueue = 1024

var baselineTargetVar = regexp.MustCompile(`^OBMUX_TARGET_(.+)_URL$`)

// runBaseline is the simplest correct relay: dial every target, dial the
// upstream, then read a frame and hand it to every target's writer goroutine,
// forever. It reads the same OBMUX_* variables as obmux (upstream URL,
// target URLs, metrics address).
func runBaseline() int {
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "baseline:", err)
		return 1
	}
	upURL := os.Getenv("OBMUX_UPSTREAM_URL")
	var urls []string
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		if baselineTargetVar.MatchString(k) {
			urls = append(urls, v)
		}
	}
	sort.Strings(urls)
	if upURL == "" || len(urls) == 0 {
		return fail(fmt.Errorf("set OBMUX_UPSTREAM_URL and at least one OBMUX_TARGET_<NAME>_URL"))
	}
	go serveBaselineMetrics(os.Getenv("OBMUX_METRICS_LISTEN"), os.Getenv(pprofEnv))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		os.Exit(0)
	}()

	ctx := context.Background()
	outs := make([]*baselineTarget, len(urls))
	var wg sync.WaitGroup
	errs := make(chan error, len(urls))
	limit := make(chan struct{}, 64)
	for i, u := range urls {
		wg.Go(func() {
			limit <- struct{}{}
			defer func() { <-limit }()
			ws, _, err := websocket.Dial(ctx, u, nil)
			if err != nil {
				errs <- err
				return
			}
			ws.CloseRead(ctx) // handle control frames
			outs[i] = &baselineTarget{ws: ws, ch: make(chan []byte, baselineQueue)}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return fail(err)
	}
	for _, t := range outs {
		go t.write()
	}
	up, _, err := websocket.Dial(ctx, upURL, nil)
	if err != nil {
		return fail(err)
	}
	up.SetReadLimit(16 << 20)
	for {
		_, b, err := up.Read(ctx)
		if err != nil {
			return fail(err)
		}
		for _, t := range outs {
			if t.dead {
				continue
			}
			select {
			case t.ch <- b:
			default:
				t.dead = true
				close(t.ch)
				t.ws.CloseNow()
			}
		}
	}
}

type baselineTarget struct {
	ws   *websocket.Conn
	ch   chan []byte
	dead bool // owned by the reader loop
}

func (t *baselineTarget) write() {
	for b := range t.ch {
		if err := t.ws.Write(context.Background(), websocket.MessageText, b); err != nil {
			t.ws.CloseNow()
			for range t.ch {
			}
			return
		}
	}
}

// serveBaselineMetrics serves what the bench reads from obmux's metrics
// listener (go_memstats_alloc_bytes_total), and pprof when asked to.
func serveBaselineMetrics(addr, pprofAddr string) {
	if pprofAddr != "" {
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		go http.ListenAndServe(pprofAddr, mux)
	}
	if addr == "" {
		return
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/metrics", func(w http.ResponseWriter, _ *http.Request) {
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		fmt.Fprintf(w, "go_memstats_alloc_bytes_total %d\n", m.TotalAlloc)
	})
	http.ListenAndServe(addr, mux)
}
