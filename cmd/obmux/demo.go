package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/config"
	"github.com/obmux/obmux/internal/sim"
)

const demoSelfID = 10001

// demoTiming paces the demo: an upstream message every Tick; after its
// AwayAfter-th message koishi goes away for Away (its server answers 503, as a
// framework that restarts), then comes back and is replayed what it missed.
type demoTiming struct {
	Tick      time.Duration
	AwayAfter int
	Away      time.Duration
}

var demoDefaults = demoTiming{Tick: time.Second, AwayAfter: 5, Away: 5 * time.Second}

// demo runs obmux between a simulated upstream (a message event every second;
// answers get_login_info, get_status, send_msg) and two simulated targets
// that print what they receive and now and then call send_msg, until ctx is
// done. One of them, koishi, goes away for a few seconds and is replayed what
// it missed when it is back. OBMUX_* variables in environ still apply, over
// the demo's own.
func demo(ctx context.Context, environ []string, stdout, stderr io.Writer) error {
	return runDemo(ctx, demoDefaults, environ, stdout, stderr, nil)
}

// demoShow prints the demo's lines, one at a time.
type demoShow struct {
	mu  sync.Mutex
	out io.Writer
}

func (d *demoShow) say(who, format string, args ...any) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fmt.Fprintf(d.out, "%s %-8s %s\n", time.Now().Format(time.TimeOnly), who, fmt.Sprintf(format, args...))
}

// runDemo is demo with its timing; onStart, if not nil, gets obmux's
// addresses.
func runDemo(ctx context.Context, tm demoTiming, environ []string, stdout, stderr io.Writer, onStart started) error {
	show := &demoShow{out: stdout}
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
	var sent atomic.Int64 // the number of the last message the upstream sent
	wg.Go(func() { demoUpstream(simCtx, upstream, tm.Tick, &sent, show) })

	env := []string{
		"OBMUX_UPSTREAM_URL=" + upstream.URL,
		"OBMUX_METRICS_LISTEN=127.0.0.1:9108",
		"OBMUX_LOG_FORMAT=text",
		// Back soon after koishi is (the backoff would wait up to 30 s).
		"OBMUX_RECONNECT_MIN=" + max(tm.Away/20, 10*time.Millisecond).String(),
		"OBMUX_RECONNECT_MAX=" + max(tm.Away/4, 10*time.Millisecond).String(),
	}
	for _, name := range []string{"nonebot", "koishi"} {
		t, err := sim.Listen("127.0.0.1:0", "/onebot/v11/ws")
		if err != nil {
			return err
		}
		defer t.Close()
		env = append(env, "OBMUX_TARGET_"+strings.ToUpper(name)+"_URL="+t.URL)
		bot := &demoBot{name: name, s: t, show: show, sent: &sent}
		if name == "koishi" {
			bot.awayAfter, bot.awayFor = tm.AwayAfter, tm.Away
		}
		t.Check = bot.check // before obmux dials it
		wg.Go(func() { bot.run(simCtx) })
	}
	cfg, err := config.Load(append(env, environ...))
	if err != nil {
		return err
	}
	show.say("demo", "simulated upstream at %s, targets nonebot and koishi; Ctrl-C stops", upstream.URL)
	return serve(ctx, cfg, stderr, func(a listenAddrs) {
		show.say("demo", "status page: http://%s/  health and metrics: http://%s/readyz  http://%s/metrics", a.Metrics, a.Metrics, a.Metrics)
		if onStart != nil {
			onStart(a)
		}
	})
}

// demoUpstream plays the OneBot implementation on every connection obmux
// opens: lifecycle connect, then message #1, #2, ... every tick.
func demoUpstream(ctx context.Context, s *sim.Server, tick time.Duration, sent *atomic.Int64, show *demoShow) {
	for {
		p, err := s.Next(ctx)
		if err != nil {
			return
		}
		show.say("upstream", "obmux connected (User-Agent %s)", p.Header.Get("User-Agent"))
		go func() {
			for {
				req, err := p.Next(ctx)
				if err != nil {
					return
				}
				resp := sim.Answer(demoSelfID, req)
				show.say("upstream", "API call %s -> %s", req, resp)
				p.Send(ctx, resp)
			}
		}()
		p.Send(ctx, sim.Lifecycle(demoSelfID, "connect"))
		if !demoMessages(ctx, p, tick, sent) {
			return
		}
	}
}

// demoMessages sends a message every tick until the connection ends (true)
// or ctx is done (false).
func demoMessages(ctx context.Context, p *sim.Peer, tick time.Duration, sent *atomic.Int64) bool {
	t := time.NewTicker(tick)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return false
		case <-p.Done:
			return true
		case <-t.C:
			n := sent.Add(1)
			p.Send(ctx, sim.PrivateMessage(demoSelfID, 20002, n, fmt.Sprintf("hello #%d", n)))
		}
	}
}

// demoBot plays a bot framework: it prints what it receives and answers
// every third message with send_msg. With awayAfter set, it goes away after
// that many messages for awayFor (its server answers 503), once.
type demoBot struct {
	name      string
	s         *sim.Server
	show      *demoShow
	sent      *atomic.Int64
	awayAfter int
	awayFor   time.Duration

	away    atomic.Bool
	missed  int64 // the last message sent before it came back; 0: not away yet
	wentOff bool
}

var demoMessageNumber = regexp.MustCompile(`"message_id":(\d+)`)

// check is the bot's server's Check: 503 while it is away.
func (b *demoBot) check(*http.Request) int {
	if b.away.Load() {
		return http.StatusServiceUnavailable
	}
	return 0
}

func (b *demoBot) run(ctx context.Context) {
	for {
		p, err := b.s.Next(ctx)
		if err != nil {
			return
		}
		if b.wentOff {
			b.missed = b.sent.Load()
			b.show.say(b.name, "back: obmux replays the messages it missed while away, then live ones follow")
		}
		b.show.say(b.name, "connected: X-Self-ID %s, X-Client-Role %s", p.Header.Get("X-Self-ID"), p.Header.Get("X-Client-Role"))
		b.serve(ctx, p)
	}
}

// serve prints what one connection receives until it ends, or until the bot
// goes away.
func (b *demoBot) serve(ctx context.Context, p *sim.Peer) {
	for n := 0; ; {
		msg, err := p.Next(ctx)
		if err != nil {
			b.show.say(b.name, "disconnected: %v", p.Err)
			return
		}
		s := string(msg)
		if len(s) > 160 {
			s = s[:160] + "…"
		}
		isMsg := strings.Contains(string(msg), `"post_type":"message"`)
		if m := demoMessageNumber.FindSubmatch(msg); isMsg && m != nil && b.missed != 0 {
			if id, _ := strconv.ParseInt(string(m[1]), 10, 64); id <= b.missed {
				s = "(replayed) " + s
			}
		}
		b.show.say(b.name, "got %s", s)
		if !isMsg {
			continue
		}
		if n++; n%3 == 0 {
			call := fmt.Sprintf(`{"action":"send_msg","params":{"user_id":20002,"message":"reply from %s"},"echo":%d}`, b.name, n)
			b.show.say(b.name, "calls %s", call)
			p.Send(ctx, []byte(call))
		}
		if b.awayAfter > 0 && !b.wentOff && n == b.awayAfter {
			b.goAway(p)
			return
		}
	}
}

// goAway drops the connection and answers 503 for awayFor.
func (b *demoBot) goAway(p *sim.Peer) {
	b.wentOff = true
	b.away.Store(true)
	b.show.say(b.name, "going away for %s (closes with 1001, then its server answers 503, as a framework that restarts)", b.awayFor)
	p.WS.Close(websocket.StatusGoingAway, "restarting")
	p.Close()
	time.AfterFunc(b.awayFor, func() {
		b.away.Store(false)
		b.show.say(b.name, "is back up, waiting for obmux to reconnect")
	})
}
