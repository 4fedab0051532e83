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

func run(ctx context.Context, envFile, version string) error {
	upAddr, err := sim.FreeAddr()
	if err != nil {
		return err
	}
	metricsAddr, err := sim.FreeAddr()
	if err != nil {
		return err
	}
	env := []string{
		"OBMUX_UPSTREAM_LISTEN=" + upAddr,
		"OBMUX_METRICS_LISTEN=" + metricsAddr,
		"OBMUX_UPSTREAM_TOKEN=" + upstreamToken,
		"OBMUX_RECONNECT_MIN=100ms",
		"OBMUX_RECONNECT_MAX=2s",
		"OBMUX_LOG_FORMAT=json",
	}
	var ts []*target
	for _, t := range targets {
		srv, err := sim.Listen("127.0.0.1:0", "/onebot/v11/ws")
		if err != nil {
			return err
		}
		defer srv.Close()
		// Like NoneBot: 403 for a wrong or missing token.
		srv.Check = func(r *http.Request) int {
			if r.Header.Get("Authorization") != "Bearer "+t.token {
				return http.StatusForbidden
			}
			return 0
		}
		ts = append(ts, &target{name: t.name, token: t.token, srv: srv})
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

	// Dial obmux's upstream listener as NapCat's websocketClients entry does,
	// until the container listens.
	upURL := "ws://" + upAddr + "/onebot/v11/ws"
	h := http.Header{"X-Self-ID": {strconv.Itoa(selfID)}, "X-Client-Role": {"Universal"},
		"Authorization": {"Bearer " + upstreamToken}, "User-Agent": {"imagetest (NapCat stand-in)"}}
	var up *sim.Peer
	var lastErr error
	for up == nil {
		dctx, dcancel := context.WithTimeout(ctx, 2*time.Second)
		p, _, err := sim.Dial(dctx, upURL, h)
		dcancel()
		if err == nil {
			up = p
			break
		}
		lastErr = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("obmux never accepted the upstream connection at %s: %v", upURL, lastErr)
		case <-time.After(200 * time.Millisecond):
		}
	}
	defer up.Close()
	say("upstream connected to obmux at %s", upURL)

	// The upstream answers API calls; everything else it reads is ignored.
	var wg sync.WaitGroup
	defer wg.Wait()
	upCtx, stopUp := context.WithCancel(ctx)
	defer stopUp()
	upClosed := make(chan error, 1)
	wg.Go(func() {
		for {
			req, err := up.Next(upCtx)
			if err != nil {
				upClosed <- err
				return
			}
			up.Send(upCtx, sim.Answer(selfID, req))
		}
	})
	if err := up.Send(ctx, sim.Lifecycle(selfID, "connect")); err != nil {
		return fmt.Errorf("upstream send: %w", err)
	}

	for _, t := range ts {
		p, err := t.srv.Next(ctx)
		if err != nil {
			return fmt.Errorf("target %s: obmux did not connect: %w", t.name, err)
		}
		t.peer = p
		if got := p.Header.Get("X-Self-ID"); got != strconv.Itoa(selfID) {
			return fmt.Errorf("target %s: X-Self-ID %q, want %d", t.name, got, selfID)
		}
		if got := p.Header.Get("X-Client-Role"); got != "Universal" {
			return fmt.Errorf("target %s: X-Client-Role %q, want Universal", t.name, got)
		}
		if ua := p.Header.Get("User-Agent"); version != "" && ua != "obmux/"+version {
			return fmt.Errorf("target %s: User-Agent %q, want obmux/%s", t.name, ua, version)
		}
		first, err := p.Next(ctx)
		if err != nil {
			return fmt.Errorf("target %s: no first frame: %w", t.name, err)
		}
		if f := parse(first); f.MetaEventType != "lifecycle" || f.SubType != "connect" {
			return fmt.Errorf("target %s: first frame is not lifecycle connect: %s", t.name, first)
		}
		say("target %s connected (User-Agent %s) and got lifecycle connect", t.name, p.Header.Get("User-Agent"))
	}

	for i := int64(1); i <= eventCount; i++ {
		if err := up.Send(ctx, sim.PrivateMessage(selfID, 20002, i, fmt.Sprintf("image test #%d", i))); err != nil {
			return fmt.Errorf("upstream send: %w", err)
		}
	}
	for _, t := range ts {
		for want := int64(1); want <= eventCount; want++ {
			f, raw, err := nextNonHeartbeat(ctx, t.peer)
			if err != nil {
				return fmt.Errorf("target %s: event %d of %d never arrived: %w", t.name, want, eventCount, err)
			}
			if f.PostType != "message" || f.MessageID != want {
				return fmt.Errorf("target %s: want message event %d, got %s", t.name, want, raw)
			}
		}
		say("target %s got all %d events in order", t.name, eventCount)
	}

	// An API call from one target is answered to it, echo restored.
	chat := ts[0]
	if err := chat.peer.Send(ctx, []byte(`{"action":"send_msg","params":{"user_id":20002,"message":"hi"},"echo":"imagetest-1"}`)); err != nil {
		return fmt.Errorf("target %s send: %w", chat.name, err)
	}
	for {
		f, raw, err := nextNonHeartbeat(ctx, chat.peer)
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
		break
	}

	base := "http://" + metricsAddr
	if code, _, err := get(ctx, base+"/readyz"); err != nil || code != http.StatusOK {
		return fmt.Errorf("/readyz: status %d, error %v; want 200", code, err)
	}
	_, metrics, err := get(ctx, base+"/metrics")
	if err != nil {
		return fmt.Errorf("/metrics: %w", err)
	}
	if version != "" && !strings.Contains(metrics, `version="`+version+`"`) {
		return fmt.Errorf("/metrics: no obmux_build_info with version %q", version)
	}
	if !strings.Contains(metrics, `obmux_connection_up{name="admin",role="target"} 1`) {
		return fmt.Errorf("/metrics: target admin is not up:\n%s", grep(metrics, "obmux_connection_up"))
	}
	say("/readyz answers 200, /metrics shows both targets up")
	fmt.Println("EVENTS-OK")

	// Now the script stops the container: every target gets lifecycle
	// disable, then close 1001; the upstream close 1001.
	for _, t := range ts {
		sawDisable := false
		for {
			b, err := t.peer.Next(ctx)
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
	}
	select {
	case <-upClosed:
		if code := up.CloseStatus(); code != websocket.StatusGoingAway {
			return fmt.Errorf("upstream: close status %v, want 1001 (%v)", code, up.Err)
		}
		say("upstream: close 1001")
	case <-ctx.Done():
		return errors.New("obmux did not close the upstream connection before the deadline")
	}
	fmt.Println("SHUTDOWN-OK")
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
