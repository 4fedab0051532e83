package fanout

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/policy"
	"github.com/obmux/obmux/wsconn"
)

// TargetConfig is one named reverse-WS target.
type TargetConfig struct {
	// Name names the target in logs and metrics (lower case).
	Name string
	// URL is the framework's reverse-WS address.
	URL string
	// Token is sent as "Authorization: Bearer <token>" when not empty.
	Token string
	// EnvPrefix is the target's variable prefix, for hints (OBMUX_TARGET_X).
	EnvPrefix string
	// Policy is what the target gets and may do.
	Policy policy.Policy
}

// Target dials one framework's reverse-WS server, keeps it connected, and
// resumes it where it left off after a reconnect.
type Target struct {
	cfg    TargetConfig
	hub    *Hub
	stats  *health.Stats
	log    *slog.Logger
	resume uint64 // seq after the last event written to it; 0 before the first connect
}

// NewTarget returns a Target fed by hub.
func (h *Hub) NewTarget(cfg TargetConfig) *Target {
	t := &Target{cfg: cfg, hub: h, stats: h.mon.Track(health.RoleTarget, cfg.Name),
		log: h.log.With("role", "target", "name", cfg.Name)}
	if h.cfg.Durable {
		t.resume = 1 // the ring's first seq: all it holds
		h.mu.Lock()
		h.unseen[cfg.Name] = true
		h.mu.Unlock()
	}
	return t
}

// Run connects the target once the self_id is known and reconnects it with
// backoff until ctx is done or the hub closes. A change of self_id ends the
// connection (lifecycle disable, close 1000) and redials with the new one.
func (t *Target) Run(ctx context.Context) {
	var selfID int64 // the self_id of the last handshake
	r := wsconn.Redial{URL: t.cfg.URL, Backoff: t.hub.cfg.Backoff, Handshakes: t.hub.handshakes, Stats: t.stats, Log: t.log,
		Header: func(ctx context.Context) (http.Header, bool) {
			id, ok := t.waitSelfID(ctx)
			if !ok || t.hub.Closing() {
				return nil, false
			}
			selfID = id
			return t.header(id), true
		},
		Serve: func(ctx context.Context, ws *websocket.Conn, raw io.Closer) wsconn.Served {
			// Logged once the connection settles: one the framework turns
			// down at once is a failed dial, not a connect.
			connected := func() { t.log.Info("target connected", "url", wsconn.RedactURL(t.cfg.URL), "self_id", selfID) }
			end, resume := t.hub.serve(ctx, ws, raw, t.stats, serveOpts{events: true, api: true, heartbeat: true, replayed: true, selfID: selfID,
				resume: t.resume, policy: &t.cfg.Policy, settled: connected})
			t.resume = resume
			return end
		},
		DialFailed: "cannot connect to target", DialHint: t.hint,
		Disconnected: "target disconnected", CloseHint: closeHint,
		RefusedHint: func(err *wsconn.RefusedError) string { return t.refusedHint(err, selfID) }}
	r.Run(ctx)
}

// header is the handshake's header for selfID.
func (t *Target) header(selfID int64) http.Header {
	return DialHeader(t.cfg, selfID, t.hub.cfg.UserAgent)
}

// DialHeader is the header of a target's handshake: X-Self-ID,
// X-Client-Role Universal, the User-Agent and the target's token, if any, as
// Authorization: Bearer (obmux doctor sends the same).
func DialHeader(cfg TargetConfig, selfID int64, userAgent string) http.Header {
	h := http.Header{
		"X-Self-ID":     {strconv.FormatInt(selfID, 10)},
		"X-Client-Role": {"Universal"},
		"User-Agent":    {userAgent},
	}
	if cfg.Token != "" {
		h.Set("Authorization", "Bearer "+cfg.Token)
	}
	return h
}

// WaitingSelfID is why a target is not dialed before the self_id is known
// (the X-Self-ID header needs it), as /readyz and /status say.
const WaitingSelfID = "waiting for the upstream: self_id unknown"

// waitSelfID waits until the upstream's self_id is known.
func (t *Target) waitSelfID(ctx context.Context) (int64, bool) {
	for {
		s, changed := t.hub.up.State()
		if s.SelfID != 0 {
			t.stats.Waiting("")
			return s.SelfID, true
		}
		t.stats.Waiting(WaitingSelfID)
		select {
		case <-ctx.Done():
			return 0, false
		case <-changed:
		}
	}
}

// hint explains a failed dial in the terms of the frameworks users run.
func (t *Target) hint(err error) string { return DialHint(t.cfg, err) }

// DialHint explains a failed dial of the target cfg in the terms of the
// frameworks users run.
func DialHint(cfg TargetConfig, err error) string {
	tok := cfg.EnvPrefix + "_TOKEN"
	var se *wsconn.HTTPStatusError
	if errors.As(err, &se) {
		switch se.Status {
		case http.StatusForbidden:
			return fmt.Sprintf("NoneBot answers 403 for a wrong token (check %s against its ONEBOT_ACCESS_TOKEN), for a wrong path "+
				"(it listens on /onebot/v11/ws, not /onebot/v11), and while it still holds another connection with the same X-Self-ID", tok)
		case http.StatusUnauthorized:
			return fmt.Sprintf("the target wants a token: set %s", tok)
		case http.StatusNotFound:
			return "wrong path: NoneBot listens on /onebot/v11/ws, Koishi on /onebot (its adapter's path setting)"
		}
		return fmt.Sprintf("the target refused the WebSocket handshake; check %s_URL", cfg.EnvPrefix)
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return fmt.Sprintf("the host of %s_URL does not resolve: with Docker Compose, use the framework's service name and put obmux "+
			"on the same network", cfg.EnvPrefix)
	}
	if strings.Contains(err.Error(), "connection refused") {
		return fmt.Sprintf("nothing listens at %s_URL: is the framework running, and its reverse-WS server enabled? "+
			"From another container, NoneBot must listen on HOST=0.0.0.0 in its .env (its default 127.0.0.1 takes no outside connections), "+
			"Koishi's server plugin on host 0.0.0.0", cfg.EnvPrefix)
	}
	return fmt.Sprintf("check %s_URL and that the framework is reachable", cfg.EnvPrefix)
}

// refusedHint explains a connection the framework accepted and closed at
// once.
func (t *Target) refusedHint(err *wsconn.RefusedError, selfID int64) string {
	return RefusedHint(t.cfg, err, selfID)
}

// RefusedHint explains a connection to the target cfg that the framework
// accepted and closed at once, by what each framework does: Koishi's OneBot
// adapter serves only its path (/onebot by default) and closes a connection
// whose X-Self-ID is not its selfId; NoneBot listens on /onebot/v11/ws and
// closes a second connection for one X-Self-ID.
func RefusedHint(cfg TargetConfig, err *wsconn.RefusedError, selfID int64) string {
	switch r := strings.ToLower(err.Reason); {
	case strings.Contains(r, "duplicate"):
		return closeHint(errors.New("Duplicate X-Self-ID"))
	case strings.Contains(r, "x-self-id"), strings.Contains(r, "selfid"), strings.Contains(r, "self_id"):
		return fmt.Sprintf("the framework does not serve X-Self-ID %d: Koishi's selfId (adapter-onebot) must be this QQ number", selfID)
	case strings.Contains(r, "x-client-role"):
		return "the framework wants another X-Client-Role: obmux connects as Universal (Koishi: leave the adapter's role setting alone)"
	}
	path := "/"
	if u, perr := url.Parse(cfg.URL); perr == nil && u.Path != "" {
		path = u.Path
	}
	koishi := fmt.Sprintf("Koishi listens on /onebot and closes a connection whose X-Self-ID is not its selfId, which must be the QQ number %d", selfID)
	nonebot := "NoneBot listens on /onebot/v11/ws and closes a second connection with the same X-Self-ID (is the implementation or another obmux also connected to it?)"
	switch {
	case strings.HasSuffix(path, "/onebot/v11/ws"):
		return fmt.Sprintf("the framework turned the connection down: %s_URL has NoneBot's path; %s; %s", cfg.EnvPrefix, nonebot, koishi)
	case strings.HasSuffix(path, "/onebot"):
		return fmt.Sprintf("the framework turned the connection down: %s", koishi)
	}
	return fmt.Sprintf("the framework turned the connection down: check the path of %s_URL (%s); %s; %s", cfg.EnvPrefix, path, koishi, nonebot)
}

// closeHint explains a close the peer chose.
func closeHint(err error) string {
	if err == nil {
		return ""
	}
	switch s := err.Error(); {
	case strings.Contains(s, "Duplicate X-Self-ID"):
		return "the framework still holds another connection for this self_id: is the implementation (or another obmux) also connected to it?"
	case strings.Contains(s, "X-Self-ID"), strings.Contains(s, "selfId"):
		return "the framework does not accept this self_id: check its configured bot account"
	case strings.Contains(s, "keepalive"):
		return "no pong in time: the framework is stuck, or the network path (NAT, proxy) dropped the connection"
	}
	return ""
}
