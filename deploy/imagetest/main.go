// Command imagetest plays NapCat and two NoneBots around an obmux running in
// a container, for deploy/test-image.sh. It starts two simulated targets on
// 127.0.0.1, writes the environment the container needs (-env-file, one
// KEY=value a line, and prints it), dials obmux's upstream listener as NapCat
// does (reverse WS with X-Self-ID and a token), and checks:
//
//   - both targets are dialed with the right token and headers and greeted
//     with lifecycle connect;
//   - events from the upstream reach both targets, in order;
//   - an API call from a target is answered with its echo;
//   - /readyz answers 200 and /metrics has obmux_build_info for -version.
//
// It then prints "EVENTS-OK" and waits for obmux to be stopped: each target
// must get lifecycle disable and close 1001, the upstream close 1001. Then it
// prints "SHUTDOWN-OK" and exits 0. Any failure, or -timeout passing, exits 1
// with a message saying what was missing.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/internal/sim"
)

const selfID = 10001

const (
	upstreamToken = "napcat-secret"
	eventCount    = 5
)

var targets = []struct{ name, token string }{{"chat", "chat-secret"}, {"admin", "admin-secret"}}

func main() {
	envFile := flag.String("env-file", "", "write the container's environment here (required)")
	version := flag.String("version", "", "the version obmux must report (User-Agent, obmux_build_info); empty: not checked")
	timeout := flag.Duration("timeout", 120*time.Second, "overall deadline")
	flag.Parse()
	if *envFile == "" {
		fmt.Fprintln(os.Stderr, "imagetest: -env-file is required")
		os.Exit(2)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	if err := run(ctx, *envFile, *version); err != nil {
		fmt.Fprintln(os.Stderr, "imagetest: FAIL:", err)
		os.Exit(1)
	}
}

func say(format string, args ...any) {
	fmt.Printf("imagetest: "+format+"\n", args...)
}

type target struct {
	name, token string
	srv         *sim.Server
	peer        *sim.Peer
}

// play is one run of the image test: obmux's addresses, the simulated
// targets and upstream, and what the test expects of them.
type play struct {
	ctx                 context.Context
	version             string // "": not checked
	upAddr, metricsAddr string
	ts                  []*target
	up                  *sim.Peer
	upClosed            chan error // the upstream's reader ended
}

// run plays NapCat and the two NoneBots around the container: its steps in
// order, EVENTS-OK, then the shutdown's checks and SHUTDOWN-OK.
func run(ctx context.Context, envFile, version string) error {
	p := &play{ctx: ctx, version: version, upClosed: make(chan error, 1)}
	defer p.closeTargets()
	if err := p.setUp(envFile); err != nil {
		return err
	}
	if err := p.dialUpstream(); err != nil {
		return err
	}
	defer p.up.Close()
	var wg sync.WaitGroup
	defer wg.Wait()
	upCtx, stopUp := context.WithCancel(ctx)
	defer stopUp()
	wg.Go(func() { p.answerCalls(upCtx) })
	for _, step := range []func() error{p.greet, p.acceptTargets, p.checkEvents, p.checkCall, p.checkHealth} {
		if err := step(); err != nil {
			return err
		}
	}
	fmt.Println("EVENTS-OK")
	if err := p.checkShutdown(); err != nil {
		return err
	}
	fmt.Println("SHUTDOWN-OK")
	return nil
}

// setUp starts the targets (403 for a wrong token, like NoneBot) and writes
// the container's environment to envFile.
func (p *play) setUp(envFile string) error {
	var err error
	if p.upAddr, err = sim.FreeAddr(); err != nil {
		return err
	}
	if p.metricsAddr, err = sim.FreeAddr(); err != nil {
		return err
	}
	env := []string{
		"OBMUX_UPSTREAM_LISTEN=" + p.upAddr,
		"OBMUX_METRICS_LISTEN=" + p.metricsAddr,
		"OBMUX_UPSTREAM_TOKEN=" + upstreamToken,
		"OBMUX_RECONNECT_MIN=100ms",
		"OBMUX_RECONNECT_MAX=2s",
		"OBMUX_LOG_FORMAT=json",
	}
	for _, t := range targets {
		srv, err := sim.Listen("127.0.0.1:0", "/onebot/v11/ws")
		if err != nil {
			return err
		}
		srv.Check = func(r *http.Request) int {
			if r.Header.Get("Authorization") != "Bearer "+t.token {
				return http.StatusForbidden
			}
			return 0
		}
		p.ts = append(p.ts, &target{name: t.name, token: t.token, srv: srv})
		up := "OBMUX_TARGET_" + strings.ToUpper(t.name)
		env = append(env, up+"_URL="+srv.URL, up+"_TOKEN="+t.token)
	}
	if err := writeFile(envFile, strings.Join(env, "\n")+"\n"); err != nil {
		return err
	}
	say("environment for the container (%s):", envFile)
	for _, e := range env {
		fmt.Println("  " + e)
	}
	return nil
}

// closeTargets stops the targets' servers.
func (p *play) closeTargets() {
	for _, t := range p.ts {
		t.srv.Close()
	}
}

// dialUpstream dials obmux's upstream listener as NapCat's websocketClients
// entry does, until the container listens.
func (p *play) dialUpstream() error {
	upURL := "ws://" + p.upAddr + "/onebot/v11/ws"
	h := http.Header{"X-Self-ID": {strconv.Itoa(selfID)}, "X-Client-Role": {"Universal"},
		"Authorization": {"Bearer " + upstreamToken}, "User-Agent": {"imagetest (NapCat stand-in)"}}
	var lastErr error
	for {
		dctx, dcancel := context.WithTimeout(p.ctx, 2*time.Second)
		up, _, err := sim.Dial(dctx, upURL, h)
		dcancel()
		if err == nil {
			p.up = up
			say("upstream connected to obmux at %s", upURL)
			return nil
		}
		lastErr = err
		select {
		case <-p.ctx.Done():
			return fmt.Errorf("obmux never accepted the upstream connection at %s: %v", upURL, lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// answerCalls answers the API calls the upstream reads, until ctx is done
// or the connection ends (upClosed then gets why); everything else it
// reads is ignored.
func (p *play) answerCalls(ctx context.Context) {
	for {
		req, err := p.up.Next(ctx)
		if err != nil {
			p.upClosed <- err
			return
		}
		p.up.Send(ctx, sim.Answer(selfID, req))
	}
}

// greet sends the upstream's lifecycle connect.
func (p *play) greet() error {
	if err := p.up.Send(p.ctx, sim.Lifecycle(selfID, "connect")); err != nil {
		return fmt.Errorf("upstream send: %w", err)
	}
	return nil
}

// acceptTargets waits for obmux to dial each target with the right headers
// and greet it with lifecycle connect.
func (p *play) acceptTargets() error {
	for _, t := range p.ts {
		peer, err := t.srv.Next(p.ctx)
		if err != nil {
			return fmt.Errorf("target %s: obmux did not connect: %w", t.name, err)
		}
		t.peer = peer
		if got := peer.Header.Get("X-Self-ID"); got != strconv.Itoa(selfID) {
			return fmt.Errorf("target %s: X-Self-ID %q, want %d", t.name, got, selfID)
		}
		if got := peer.Header.Get("X-Client-Role"); got != "Universal" {
			return fmt.Errorf("target %s: X-Client-Role %q, want Universal", t.name, got)
		}
		if ua := peer.Header.Get("User-Agent"); p.version != "" && ua != "obmux/"+p.version {
			return fmt.Errorf("target %s: User-Agent %q, want obmux/%s", t.name, ua, p.version)
		}
		first, err := peer.Next(p.ctx)
		if err != nil {
			return fmt.Errorf("target %s: no first frame: %w", t.name, err)
		}
		if f := parse(first); f.MetaEventType != "lifecycle" || f.SubType != "connect" {
			return fmt.Errorf("target %s: first frame is not lifecycle connect: %s", t.name, first)
		}
		say("target %s connected (User-Agent %s) and got lifecycle connect", t.name, peer.Header.Get("User-Agent"))
	}
	return nil
}

// checkEvents sends events from the upstream and checks that each target
// gets them all, in order.
func (p *play) checkEvents() error {
	for i := int64(1); i <= eventCount; i++ {
		if err := p.up.Send(p.ctx, sim.PrivateMessage(selfID, 20002, i, fmt.Sprintf("image test #%d", i))); err != nil {
			return fmt.Errorf("upstream send: %w", err)
		}
	}
	for _, t := range p.ts {
		for want := int64(1); want <= eventCount; want++ {
			f, raw, err := nextNonHeartbeat(p.ctx, t.peer)
			if err != nil {
				return fmt.Errorf("target %s: event %d of %d never arrived: %w", t.name, want, eventCount, err)
			}
			if f.PostType != "message" || f.MessageID != want {
				return fmt.Errorf("target %s: want message event %d, got %s", t.name, want, raw)
			}
		}
		say("target %s got all %d events in order", t.name, eventCount)
	}
	return nil
}

// checkCall checks that an API call from one target is answered to it,
// echo restored.
func (p *play) checkCall() error {
	chat := p.ts[0]
	if err := chat.peer.Send(p.ctx, []byte(`{"action":"send_msg","params":{"user_id":20002,"message":"hi"},"echo":"imagetest-1"}`)); err != nil {
		return fmt.Errorf("target %s send: %w", chat.name, err)
	}
	for {
		f, raw, err := nextNonHeartbeat(p.ctx, chat.peer)
		if err != nil {
			return fmt.Errorf("target %s: no answer to send_msg: %w", chat.name, err)
		}
		if f.PostType != "" {
			continue
		}
		if f.Status != "ok" || string(f.Echo) != `"imagetest-1"` {
			return fmt.Errorf("target %s: want an ok answer with echo \"imagetest-1\", got %s", chat.name, raw)
		}
		say("target %s: send_msg answered with its echo", chat.name)
		return nil
	}
}

// checkHealth checks /readyz and /metrics (the version, both targets up).
func (p *play) checkHealth() error {
	base := "http://" + p.metricsAddr
	if code, _, err := get(p.ctx, base+"/readyz"); err != nil || code != http.StatusOK {
		return fmt.Errorf("/readyz: status %d, error %v; want 200", code, err)
	}
	_, metrics, err := get(p.ctx, base+"/metrics")
	if err != nil {
		return fmt.Errorf("/metrics: %w", err)
	}
	if p.version != "" && !strings.Contains(metrics, `version="`+p.version+`"`) {
		return fmt.Errorf("/metrics: no obmux_build_info with version %q", p.version)
	}
	if !strings.Contains(metrics, `obmux_connection_up{name="admin",role="target"} 1`) {
		return fmt.Errorf("/metrics: target admin is not up:\n%s", grep(metrics, "obmux_connection_up"))
	}
	say("/readyz answers 200, /metrics shows both targets up")
	return nil
}

// checkShutdown waits for the script to stop the container: every target
// must get lifecycle disable, then close 1001; the upstream close 1001.
func (p *play) checkShutdown() error {
	for _, t := range p.ts {
		if err := p.targetClosed(t); err != nil {
			return err
		}
	}
	select {
	case <-p.upClosed:
		if code := p.up.CloseStatus(); code != websocket.StatusGoingAway {
			return fmt.Errorf("upstream: close status %v, want 1001 (%v)", code, p.up.Err)
		}
		say("upstream: close 1001")
		return nil
	case <-p.ctx.Done():
		return errors.New("obmux did not close the upstream connection before the deadline")
	}
}

// targetClosed checks that t got lifecycle disable, then close 1001.
func (p *play) targetClosed(t *target) error {
	sawDisable := false
	for {
		b, err := t.peer.Next(p.ctx)
		if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
			return fmt.Errorf("target %s: obmux did not close the connection before the deadline (lifecycle disable seen: %v)", t.name, sawDisable)
		}
		if err != nil {
			break
		}
		if f := parse(b); f.MetaEventType == "lifecycle" && f.SubType == "disable" {
			sawDisable = true
		}
	}
	if !sawDisable {
		return fmt.Errorf("target %s: closed without lifecycle disable (%v)", t.name, t.peer.Err)
	}
	if code := t.peer.CloseStatus(); code != websocket.StatusGoingAway {
		return fmt.Errorf("target %s: close status %v, want 1001 going away (%v)", t.name, code, t.peer.Err)
	}
	say("target %s: lifecycle disable, then close 1001 (%v)", t.name, t.peer.Err)
	return nil
}

type frame struct {
	PostType      string          `json:"post_type"`
	MetaEventType string          `json:"meta_event_type"`
	SubType       string          `json:"sub_type"`
	MessageID     int64           `json:"message_id"`
	Status        string          `json:"status"`
	Echo          json.RawMessage `json:"echo"`
}

func parse(b []byte) frame {
	var f frame
	json.Unmarshal(b, &f)
	return f
}

func nextNonHeartbeat(ctx context.Context, p *sim.Peer) (frame, []byte, error) {
	for {
		b, err := p.Next(ctx)
		if err != nil {
			return frame{}, nil, err
		}
		if f := parse(b); f.MetaEventType != "heartbeat" {
			return f, b, nil
		}
	}
}

func get(ctx context.Context, url string) (int, string, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func grep(s, word string) string {
	var out []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		if strings.Contains(sc.Text(), word) {
			out = append(out, sc.Text())
		}
	}
	return strings.Join(out, "\n")
}

// writeFile writes s to path atomically, so that a reader polling for the
// file never sees half of it.
func writeFile(path, s string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".env-*")
	if err != nil {
		return err
	}
	if _, err := tmp.WriteString(s); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
