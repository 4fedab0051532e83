package proxy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/onebot"
	"github.com/obmux/obmux/wsconn"
)

// Sink receives the upstream's events. The fan-out hub implements it.
type Sink interface {
	// Event receives every upstream event except heartbeat and lifecycle
	// meta events, in upstream order, on the upstream's reader goroutine.
	// It must not block. b is shared: it must not be modified.
	Event(b []byte)
	// SelfIDChanged is called after the upstream's self_id changed from a
	// known one to id (another account logged in); State already reports
	// id. It must not block for long.
	SelfIDChanged(id int64)
}

// UpstreamConfig configures an Upstream.
type UpstreamConfig struct {
	// URL is the implementation's forward-WS URL to dial; empty means the
	// implementation dials obmux (ServeHTTP).
	URL string
	// Token is sent as a Bearer token when dialing and required from the
	// implementation when it dials obmux.
	Token string
	// SelfID fixes the bot's QQ number; 0 learns it from the upstream.
	SelfID    int64
	UserAgent string
	Conn      wsconn.Config
	Backoff   wsconn.Backoff
	// Account, if not nil, is told what the upstream reports about the QQ
	// account (heartbeat status, bot_offline, lifecycle disable/enable).
	Account *health.Account
	// Refusals, if not nil, counts and logs the connections ServeHTTP
	// refuses.
	Refusals *health.Refusals
}

// Upstream owns the single connection to the OneBot implementation.
type Upstream struct {
	cfg       UpstreamConfig
	router    *Router
	sink      Sink
	stats     *health.Stats
	log       *slog.Logger
	lastEvent prometheus.Gauge

	learning  atomic.Bool    // the current connection has not told its self_id yet
	badFrames health.DropLog // frames dropped as invalid, logged once per reason and connection

	state   *UpstreamState // written here only, under mu
	mu      sync.Mutex
	conn    *wsconn.Conn
	done    chan struct{} // closed when conn's Run has returned
	closed  bool
	serving sync.WaitGroup
}

// NewUpstream returns an Upstream that keeps state (which it alone writes)
// and routes responses through router and events to sink.
func NewUpstream(cfg UpstreamConfig, state *UpstreamState, router *Router, sink Sink, mon *health.Monitor, log *slog.Logger) *Upstream {
	u := &Upstream{cfg: cfg, state: state, router: router, sink: sink, log: log.With("role", "upstream"),
		stats: mon.Track(health.RoleUpstream, "upstream"), lastEvent: mon.Metrics().LastEvent()}
	state.update(func(s *State) { s.SelfID = cfg.SelfID })
	if cfg.SelfID != 0 {
		cfg.Account.SetSelfID(cfg.SelfID)
	}
	return u
}

// State returns the upstream's state and a channel closed at its next change.
func (u *Upstream) State() (State, <-chan struct{}) { return u.state.State() }

// Ready reports whether the upstream is connected and the self_id known.
func (u *Upstream) Ready() bool {
	s, _ := u.State()
	return s.Online && s.SelfID != 0
}

// Run dials the upstream and redials it with backoff until ctx is done. In
// listen mode (no URL) it only waits for ctx.
func (u *Upstream) Run(ctx context.Context) {
	if u.cfg.URL == "" {
		<-ctx.Done()
		return
	}
	r := wsconn.Redial{URL: u.cfg.URL, Backoff: u.cfg.Backoff, Stats: u.stats, Log: u.log,
		Header: func(context.Context) (http.Header, bool) { return u.header(), true },
		Serve: func(ctx context.Context, ws *websocket.Conn, raw io.Closer) wsconn.Served {
			return u.serve(ctx, ws, raw, 0)
		},
		DialFailed: "cannot reach the upstream", DialHint: func(err error) string { return upstreamHint(err, u.cfg.Token != "") },
		Disconnected: "upstream disconnected"}
	r.Run(ctx)
}

// header is the handshake's header when obmux dials the upstream.
func (u *Upstream) header() http.Header { return DialHeader(u.cfg.Token, u.cfg.UserAgent) }

// DialHeader is the handshake's header when obmux (or obmux doctor) dials
// the upstream: the User-Agent and the token, if any, as Authorization:
// Bearer.
func DialHeader(token, userAgent string) http.Header {
	h := http.Header{"User-Agent": {userAgent}}
	if token != "" {
		h.Set("Authorization", "Bearer "+token)
	}
	return h
}

func upstreamHint(err error, haveToken bool) string { return DialHint(err, haveToken) }

// DialHint explains a failed dial of the upstream (haveToken: one was sent).
func DialHint(err error, haveToken bool) string {
	var se *wsconn.HTTPStatusError
	if errors.As(err, &se) {
		switch se.Status {
		case http.StatusUnauthorized, http.StatusForbidden:
			if haveToken {
				return "the upstream refused OBMUX_UPSTREAM_TOKEN: check it matches the implementation's token"
			}
			return "the upstream wants a token: set OBMUX_UPSTREAM_TOKEN"
		case http.StatusNotFound:
			return "wrong path in OBMUX_UPSTREAM_URL: use the implementation's universal forward-WS endpoint"
		}
	}
	return "is the implementation running and its forward-WS server enabled at OBMUX_UPSTREAM_URL?"
}

// ServeHTTP accepts the implementation's reverse-WS connection (listen mode).
// It checks the token (401/403 before the upgrade) and X-Self-ID: once the
// self_id is known, a second connection with the same X-Self-ID replaces
// the first, one without X-Self-ID or with another is refused with 409
// while the first is up (counted as wrong_self_id).
func (u *Upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if code := onebot.Authorize(r, u.cfg.Token); code != 0 {
		u.cfg.Refusals.Refuse(u.log, health.ListenerUpstream, health.RefusalForStatus(code), r, "upstream connection refused",
			"status", code, "hint", "the implementation's token must equal OBMUX_UPSTREAM_TOKEN")
		http.Error(w, http.StatusText(code), code)
		return
	}
	if role := r.Header.Get("X-Client-Role"); role != "" && !strings.EqualFold(role, "Universal") {
		u.cfg.Refusals.Refuse(u.log, health.ListenerUpstream, health.RefusedNotUniversal, r, "upstream connection refused: not a universal connection",
			"X-Client-Role", short(role), "hint", "obmux needs events and API on one connection: configure the implementation's reverse WS as universal (go-cqhttp: use-universal: true)")
		http.Error(w, "obmux needs a universal connection (X-Client-Role: Universal)", http.StatusBadRequest)
		return
	}
	var declared int64
	if h := r.Header.Get("X-Self-ID"); h != "" {
		id, err := strconv.ParseInt(h, 10, 64)
		if err != nil || id <= 0 {
			u.cfg.Refusals.Refuse(u.log, health.ListenerUpstream, health.RefusedBadSelfID, r, "upstream connection refused: X-Self-ID is not a QQ number (HTTP 400)",
				"X-Self-ID", short(h))
			http.Error(w, "bad X-Self-ID", http.StatusBadRequest)
			return
		}
		declared = id
	}
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		http.Error(w, "obmux is shutting down", http.StatusServiceUnavailable)
		return
	}
	// A connection replaces the current one only for the same account: one
	// without X-Self-ID (anyone who can reach the port, when there is no
	// token) or with another is refused while it is up.
	if cur := u.state.selfID(); u.conn != nil && cur != 0 && declared != cur {
		u.mu.Unlock()
		msg, hint := "upstream connection refused: another account is connected", "one obmux serves one QQ account: run another obmux for this one"
		if declared == 0 {
			msg, hint = "upstream connection refused: no X-Self-ID while an account is connected", "a connection replaces the current one only with X-Self-ID: "+strconv.FormatInt(cur, 10)+
				" (every OneBot implementation sends it); is something else connecting to OBMUX_UPSTREAM_LISTEN? Set OBMUX_UPSTREAM_TOKEN"
		}
		u.cfg.Refusals.Refuse(u.log, health.ListenerUpstream, health.RefusedSelfID, r, msg,
			"status", http.StatusConflict, "self_id", declared, "connected_self_id", cur, "hint", hint)
		http.Error(w, fmt.Sprintf("obmux already serves self_id %d: a replacing connection must send X-Self-ID: %d", cur, cur), http.StatusConflict)
		return
	}
	u.serving.Add(1)
	u.mu.Unlock()
	defer u.serving.Done()
	ws, raw, err := wsconn.Accept(w, r)
	if err != nil {
		u.cfg.Refusals.Refuse(u.log, health.ListenerUpstream, health.RefusedHandshake, r, "upstream connection refused: not a WebSocket handshake",
			"error", err, "hint", "obmux's upstream listener takes only the implementation's reverse-WS connection")
		return
	}
	ctx := context.WithoutCancel(r.Context())
	u.serve(ctx, ws, raw, declared).Log(ctx, u.log, "upstream disconnected")
}

// serve runs one upstream connection until it ends and returns how it ended.
func (u *Upstream) serve(ctx context.Context, ws *websocket.Conn, raw io.Closer, declared int64) wsconn.Served {
	c := wsconn.New(ws, raw, u.stats, u.log, u.cfg.Conn)
	done := make(chan struct{})
	defer close(done)
	u.mu.Lock()
	// Replace: the old connection ends first, so two never overlap. Loop:
	// another new connection may have taken the place while this one waited.
	for u.conn != nil && !u.closed {
		old, oldDone := u.conn, u.done
		u.mu.Unlock()
		u.log.Info("upstream connection replaced by a new one", "self_id", declared)
		old.Close(wsconn.DisconnectReplaced, nil)
		<-oldDone
		u.mu.Lock()
	}
	if u.closed {
		u.mu.Unlock()
		ws.CloseNow()
		return wsconn.Served{Reason: health.ReasonShutdown}
	}
	u.conn, u.done = c, done
	u.learning.Store(true)
	u.badFrames.Reset()
	u.state.update(func(s *State) { s.Online = true })
	u.cfg.Account.Connected(true)
	u.router.setSend(func(b []byte, left func()) error {
		if !c.SendThen(b, onebot.KindAPIRequest, left) {
			return errors.New("upstream queue full or connection closing")
		}
		return nil
	})
	u.mu.Unlock()
	if declared != 0 {
		u.learnSelfID(declared, "X-Self-ID")
	}
	u.log.Info("upstream connected")
	if u.learning.Load() || u.cfg.Account != nil {
		// Ask; whichever comes first, this answer or a frame's self_id, wins.
		// The answer also has the nickname, for the status page.
		u.router.Request(loginInfo{u}, []byte(`{"action":"get_login_info","params":{}}`), mustScan(`{"action":"get_login_info","params":{}}`))
	}
	reason, err := c.Run(ctx, u.handle)
	u.mu.Lock()
	current := u.conn == c
	if current {
		u.conn = nil
		u.state.update(func(s *State) { s.Online = false })
		u.cfg.Account.Connected(false)
		// Under u.mu, so that a replacing connection's setSend comes after.
		u.router.setSend(nil)
	}
	u.mu.Unlock()
	if current {
		// A replacing connection waits for this serve to return (done), so
		// every call pending now was sent on c.
		u.router.UpstreamDown()
	}
	return wsconn.Served{Reason: reason, Err: err}
}

func mustScan(s string) onebot.Frame {
	f, err := onebot.Scan([]byte(s))
	if err != nil {
		panic(err)
	}
	return f
}

// Close ends the upstream connection gracefully (close 1001) and refuses new
// ones; it waits until the connection is gone or ctx is done.
func (u *Upstream) Close(ctx context.Context) {
	u.mu.Lock()
	u.closed = true
	c, done := u.conn, u.done
	u.mu.Unlock()
	if c != nil {
		c.Close(wsconn.DisconnectShutdown, nil)
		select {
		case <-done:
		case <-ctx.Done():
			c.Abort(wsconn.DisconnectShutdown, ctx.Err())
		}
	}
	wait := make(chan struct{})
	go func() { u.serving.Wait(); close(wait) }()
	select {
	case <-wait:
	case <-ctx.Done():
	}
}

// handle is the upstream reader's Handler.
func (u *Upstream) handle(b []byte) onebot.Kind {
	f, kind, err := onebot.Classify(b)
	if kind != onebot.KindAPIResponse && u.learning.Load() && f.SelfID.Valid() {
		if id, ok := onebot.Int(b, f.SelfID); ok && id > 0 {
			u.learnSelfID(id, "first frame")
		}
	}
	switch kind {
	case onebot.KindEvent:
		u.lastEvent.SetToCurrentTime()
		if onebot.Is(b, f.PostType, "notice") {
			u.notice(b)
		}
		u.sink.Event(b)
	case onebot.KindHeartbeat:
		u.heartbeat(b, f)
	case onebot.KindLifecycle:
		// Consumed: every downstream connection gets its own. Its sub_type
		// says whether the implementation still serves the account.
		u.lifecycle(b)
	case onebot.KindAPIResponse:
		if !u.router.Response(b, f) {
			u.stats.M.Dropped[health.DropTargetGone].Inc()
			u.log.Debug("response dropped: no call waits for its echo", "echo", string(onebot.Raw(b, f.Echo)))
		}
	case onebot.KindAPIRequest:
		u.stats.M.Dropped[health.DropInvalid].Inc()
		u.log.Warn("frame dropped: the upstream sent an API request", "action", string(onebot.Raw(b, f.Action)))
		return onebot.KindInvalid
	default:
		d := health.InvalidDrop(err)
		u.stats.M.Dropped[d].Inc()
		u.badFrames.Log(u.log, d, "frame from the upstream dropped: not a valid OneBot frame", "error", err, "bytes", len(b))
	}
	return kind
}

// heartbeat keeps the upstream's own status from its heartbeat event.
func (u *Upstream) heartbeat(b []byte, f onebot.Frame) {
	st := onebot.Status{Online: true, Good: true}
	status := onebot.Raw(b, f.Status)
	var extra []byte
	err := onebot.Members(status, func(key []byte, member, val onebot.Span) error {
		switch string(key) {
		case "online":
			st.Online = string(status[val.Start:val.End]) != "false"
		case "good":
			st.Good = string(status[val.Start:val.End]) != "false"
		default:
			if extra != nil {
				extra = append(extra, ',')
			}
			extra = append(extra, status[member.Start:member.End]...)
		}
		return nil
	})
	if err != nil {
		u.log.Debug("upstream heartbeat without a usable status", "error", err)
		return
	}
	st.Extra = extra
	u.state.update(func(s *State) { s.Status = onebot.Status{Online: st.Online, Good: st.Good && st.Online, Extra: extra} })
	u.cfg.Account.Heartbeat(st.Online, st.Good)
}

// notice watches the upstream's notices for the account going offline:
// NapCat's notice_type "bot_offline", Lagrange's "notify" with sub_type
// "bot_offline". The notice still goes to every peer.
func (u *Upstream) notice(b []byte) {
	if u.cfg.Account == nil {
		return
	}
	var noticeType, subType, tag, message string
	onebot.Members(b, func(key []byte, _, val onebot.Span) error {
		switch string(key) {
		case "notice_type":
			noticeType = jsonString(b[val.Start:val.End])
		case "sub_type":
			subType = jsonString(b[val.Start:val.End])
		case "tag":
			tag = jsonString(b[val.Start:val.End])
		case "message":
			message = jsonString(b[val.Start:val.End])
		}
		return nil
	})
	if noticeType != "bot_offline" && !(noticeType == "notify" && subType == "bot_offline") {
		return
	}
	reason := "bot_offline"
	for _, s := range []string{tag, message} {
		if s != "" {
			reason += ": " + s
		}
	}
	u.log.Warn("the upstream reports the account offline", "self_id", u.cfg.Account.State().SelfID, "reason", reason)
	u.cfg.Account.Event(false, reason)
}

// lifecycle reads an upstream lifecycle event: disable means the
// implementation no longer serves the account, enable that it does again.
func (u *Upstream) lifecycle(b []byte) {
	if u.cfg.Account == nil {
		return
	}
	var sub string
	onebot.Members(b, func(key []byte, _, val onebot.Span) error {
		if string(key) == "sub_type" {
			sub = jsonString(b[val.Start:val.End])
		}
		return nil
	})
	switch sub {
	case "disable":
		u.log.Warn("the upstream sent lifecycle disable: the account is offline")
		u.cfg.Account.Event(false, "lifecycle disable")
	case "enable":
		u.cfg.Account.Event(true, "lifecycle enable")
	}
}

// jsonString returns the JSON string raw as Go text ("" when it is not a
// string), at most 200 bytes of it.
func jsonString(raw []byte) string {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	if len(s) > 200 {
		s = strings.ToValidUTF8(s[:200], "") + "…"
	}
	return s
}

// learnSelfID records the self_id the current connection reported.
func (u *Upstream) learnSelfID(id int64, from string) {
	if !u.learning.CompareAndSwap(true, false) {
		return
	}
	u.mu.Lock()
	cur := u.state.selfID()
	switch {
	case cur == id:
	case u.cfg.SelfID != 0:
		u.log.Warn("the upstream reports another self_id than OBMUX_SELF_ID; keeping OBMUX_SELF_ID", "self_id", id, "OBMUX_SELF_ID", u.cfg.SelfID)
	default:
		u.state.update(func(s *State) { s.SelfID = id })
		u.cfg.Account.SetSelfID(id)
		if cur == 0 {
			u.log.Info("self_id learned", "self_id", id, "from", from)
		} else {
			u.log.Warn("self_id changed: targets and clients will reconnect", "self_id", id, "was", cur, "from", from)
			defer u.sink.SelfIDChanged(id) // after u.mu is released
		}
	}
	u.mu.Unlock()
}

// loginInfo is the Caller of obmux's own get_login_info.
type loginInfo struct{ u *Upstream }

func (l loginInfo) Stats() *health.Stats { return l.u.stats }

func (l loginInfo) Gone() <-chan struct{} { return nil }

func (l loginInfo) Hold(bool) {}

func (l loginInfo) MessageFormat() onebot.MessageFormat { return onebot.FormatAsIs }

func (l loginInfo) Deliver(b []byte) {
	f, err := onebot.Scan(b)
	if err != nil || !onebot.Is(b, f.Status, "ok") {
		l.u.log.Debug("get_login_info failed; the self_id will come from a frame", "response", string(b))
		return
	}
	data := onebot.Raw(b, f.Data)
	var id int64
	var nickname string
	onebot.Members(data, func(key []byte, _, val onebot.Span) error {
		switch string(key) {
		case "user_id":
			id, _ = onebot.Int(data, val)
		case "nickname":
			nickname = jsonString(data[val.Start:val.End])
		}
		return nil
	})
	if id > 0 {
		l.u.learnSelfID(id, "get_login_info")
		l.u.cfg.Account.SetNickname(id, nickname)
	}
}

// short bounds a header value a peer sent, for a log line.
func short(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
