package main

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/obmux/obmux/internal/sim"
)

// The soak scenario's hostile peers (issue 13): the floods of its items 1,
// 2, 4 and 8, all at once, against obmux's forward-WS and metrics listeners,
// beside the healthy targets whose throughput is measured.

const (
	soakToken = "bench-soak"
	// soakQueueBytes is OBMUX_QUEUE_BYTES in soak runs; obmux's peak RSS
	// must stay under 2 x this + 64 MiB.
	soakQueueBytes = 32 << 20
	soakBodyless   = 20 // connections per listener holding a body-less request
)

// soakEnv is obmux's extra environment in a soak run, with its forward-WS
// listener at fwd.
func soakEnv(fwd string) []string {
	return []string{"OBMUX_FORWARD_LISTEN=" + fwd, "OBMUX_FORWARD_TOKEN=" + soakToken, "OBMUX_HTTP_TIMEOUT=1s",
		fmt.Sprintf("OBMUX_QUEUE_BYTES=%d", soakQueueBytes), "OBMUX_API_MAX_INFLIGHT_BYTES=4194304"}
}

// soakBound is the peak RSS a soak run must stay under.
func soakBound() int64 { return 2*soakQueueBytes + 64<<20 }

// floods are the hostile peers of one run; counts says how much each did.
type floods struct {
	cancel                         context.CancelFunc
	wg                             sync.WaitGroup
	once                           sync.Once
	calls, echoes, wrong, bodyless atomic.Int64
}

// startFloods starts every hostile peer against obmux's forward-WS
// listener fwd and metrics listener metrics.
func startFloods(fwd, metrics string) *floods {
	ctx, cancel := context.WithCancel(context.Background())
	f := &floods{cancel: cancel}
	auth := http.Header{"Authorization": {"Bearer " + soakToken}}
	call := []byte(`{"action":"send_msg","params":{"message":"` + strings.Repeat("m", 1<<20) + `"},"echo":1}`)
	echo := []byte(`{"echo":"` + strings.Repeat("e", 4<<20) + `"}`)
	f.wg.Go(func() { sim.UnreadFlood(ctx, "ws://"+fwd+"/api", auth, call, &f.calls) })
	f.wg.Go(func() { sim.UnreadFlood(ctx, "ws://"+fwd+"/", auth, echo, &f.echoes) })
	f.wg.Go(func() { sim.WrongTokenFlood(ctx, "http://"+fwd+"/", &f.wrong) })
	for _, addr := range []string{fwd, metrics} {
		for range soakBodyless {
			f.wg.Go(func() { sim.BodylessFlood(ctx, addr, &f.bodyless) })
		}
	}
	return f
}

// underWay waits until every flood has done something, so that the
// measured part of the run is hostile throughout.
func (f *floods) underWay(ctx context.Context) error {
	deadline := time.Now().Add(30 * time.Second)
	for f.calls.Load() == 0 || f.echoes.Load() == 0 || f.wrong.Load() == 0 || f.bodyless.Load() == 0 {
		if time.Now().After(deadline) {
			return fmt.Errorf("the hostile peers did not get going in 30s: %s", f)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		time.Sleep(10 * time.Millisecond) // polling counters, not waiting for one event
	}
	return nil
}

// stop ends every flood and waits for them; it may be called again.
func (f *floods) stop() {
	f.once.Do(func() {
		f.cancel()
		f.wg.Wait()
	})
}

func (f *floods) String() string {
	return fmt.Sprintf("%d calls of 1 MiB and %d frames with a 4 MiB echo never read, %d wrong-token requests, %d body-less requests",
		f.calls.Load(), f.echoes.Load(), f.wrong.Load(), f.bodyless.Load())
}
