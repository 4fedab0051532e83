package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/obmux/obmux/config"
	"github.com/obmux/obmux/internal/sim"
)

const demoSelfID = 10001

// demo runs obmux between a simulated upstream (a message event every second;
// answers get_login_info, get_status, send_msg) and two simulated targets
// that print what they receive and now and then call send_msg, until ctx is
// done. OBMUX_* variables in environ still apply, over the demo's own.
func demo(ctx context.Context, environ []string, stdout, stderr io.Writer) error {
	var out sync.Mutex
	say := func(who, format string, args ...any) {
		out.Lock()
		defer out.Unlock()
		fmt.Fprintf(stdout, "%s %-8s %s\n", time.Now().Format(time.TimeOnly), who, fmt.Sprintf(format, args...))
	}
	upstream, err := sim.Listen("127.0.0.1:0", "/")
	if err != nil {
		return err
	}
	defer upstream.Close()
	// The simulated programs outlive obmux's shutdown, to show what they get.
	simCtx, stopSims := context.WithCancel(context.WithoutCancel(ctx))
	var wg sync.WaitGroup
	defer wg.Wait()
	defer stopSims()
	wg.Go(func() { demoUpstream(simCtx, upstream, say) })

	env := []string{
		"OBMUX_UPSTREAM_URL=" + upstream.URL,
		"OBMUX_METRICS_LISTEN=127.0.0.1:9108",
		"OBMUX_LOG_FORMAT=text",
	}
	for _, name := range []string{"nonebot", "koishi"} {
		t, err := sim.Listen("127.0.0.1:0", "/onebot/v11/ws")
		if err != nil {
			return err
		}
		defer t.Close()
		env = append(env, "OBMUX_TARGET_"+strings.ToUpper(name)+"_URL="+t.URL)
		wg.Go(func() { demoTarget(simCtx, name, t, say) })
	}
	cfg, err := config.Load(append(env, environ...))
	if err != nil {
		return err
	}
	say("demo", "simulated upstream at %s, targets nonebot and koishi; Ctrl-C stops", upstream.URL)
	return serve(ctx, cfg, stderr, func(a listenAddrs) {
		say("demo", "health and metrics: http://%s/readyz  http://%s/metrics", a.Metrics, a.Metrics)
	})
}

// demoUpstream plays the OneBot implementation on every connection obmux opens.
func demoUpstream(ctx context.Context, s *sim.Server, say func(string, string, ...any)) {
	for {
		p, err := s.Next(ctx)
		if err != nil {
			return
		}
		say("upstream", "obmux connected (User-Agent %s)", p.Header.Get("User-Agent"))
		go func() {
			for {
				req, err := p.Next(ctx)
				if err != nil {
					return
				}
				resp := sim.Answer(demoSelfID, req)
				say("upstream", "API call %s -> %s", req, resp)
				p.Send(ctx, resp)
			}
		}()
		p.Send(ctx, sim.Lifecycle(demoSelfID, "connect"))
		tick := time.NewTicker(time.Second)
		for n := int64(1); ; n++ {
			select {
			case <-ctx.Done():
				tick.Stop()
				return
			case <-p.Done:
				tick.Stop()
				goto next
			case <-tick.C:
				p.Send(ctx, sim.PrivateMessage(demoSelfID, 20002, n, fmt.Sprintf("hello #%d", n)))
			}
		}
	next:
	}
}

// demoTarget plays a bot framework: it prints what it receives and answers
// every third message with send_msg.
func demoTarget(ctx context.Context, name string, s *sim.Server, say func(string, string, ...any)) {
	for {
		p, err := s.Next(ctx)
		if err != nil {
			return
		}
		say(name, "connected: X-Self-ID %s, X-Client-Role %s", p.Header.Get("X-Self-ID"), p.Header.Get("X-Client-Role"))
		for n := 0; ; {
			b, err := p.Next(ctx)
			if err != nil {
				say(name, "disconnected: %v", p.Err)
				break
			}
			s := string(b)
			if len(s) > 160 {
				s = s[:160] + "…"
			}
			say(name, "got %s", s)
			if strings.Contains(string(b), `"post_type":"message"`) {
				if n++; n%3 == 0 {
					call := fmt.Sprintf(`{"action":"send_msg","params":{"user_id":20002,"message":"reply from %s"},"echo":%d}`, name, n)
					say(name, "calls %s", call)
					p.Send(ctx, []byte(call))
				}
			}
		}
	}
}
