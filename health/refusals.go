package health

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Refusal is why obmux refused a connection before the upgrade: the
// "reason" label of obmux_auth_failures_total.
type Refusal string

// The refusals obmux counts.
const (
	RefusedMissingToken Refusal = "missing_token" // HTTP 401
	RefusedWrongToken   Refusal = "wrong_token"   // HTTP 403
	RefusedWrongPath    Refusal = "wrong_path"    // HTTP 404
	RefusedOrigin       Refusal = "bad_origin"    // HTTP 403: a browser page from another origin, or DNS rebinding
	// RefusedSelfID is an upstream connection (listen mode) whose
	// X-Self-ID is missing or another account's while one is connected
	// and its self_id known: HTTP 409.
	RefusedSelfID    Refusal = "wrong_self_id"
	RefusedHandshake Refusal = "bad_handshake" // not a WebSocket upgrade (a browser, a scanner, a plain GET)
	// The upstream listener's own too: a split connection (X-Client-Role
	// API or Event), an X-Self-ID that is not a QQ number (HTTP 400).
	RefusedNotUniversal Refusal = "not_universal"
	RefusedBadSelfID    Refusal = "bad_self_id"
)

// refusalsOf are the reasons each listener counts, all at 0 from the start.
var refusalsOf = map[string][]Refusal{
	ListenerUpstream: {RefusedMissingToken, RefusedWrongToken, RefusedWrongPath, RefusedOrigin, RefusedHandshake,
		RefusedNotUniversal, RefusedBadSelfID, RefusedSelfID},
	ListenerForward: {RefusedMissingToken, RefusedWrongToken, RefusedWrongPath, RefusedOrigin, RefusedHandshake},
}

// The listeners whose refusals are counted: the "listener" label.
const (
	ListenerUpstream = "upstream"
	ListenerForward  = "forward"
)

// RefusalForStatus returns the refusal of an onebot.Authorize status: 401
// is a missing token, anything else a wrong one.
func RefusalForStatus(status int) Refusal {
	if status == http.StatusUnauthorized {
		return RefusedMissingToken
	}
	return RefusedWrongToken
}

const (
	// refusalWindow is how long a refusal of one remote address for one
	// reason is logged at debug after it was logged at warn.
	refusalWindow = time.Minute
	// refusalKeys bounds the remembered (address, reason) pairs; over it,
	// refusals from new addresses are logged at debug (and still counted).
	refusalKeys = 4096
	// wrongPaths bounds the distinct wrong paths each logged at warn of
	// their own; pathBytes is how much of a path is logged.
	wrongPaths = 64
	pathBytes  = 128
)

// Refusals counts every refused connection in
// obmux_auth_failures_total{listener,reason} and logs it at warn once per
// remote address, reason (and, for a wrong path, path) per minute, then at
// debug, so that a flood of wrong tokens costs a handful of lines. A nil
// *Refusals logs every refusal at warn and counts nothing. It is safe for
// concurrent use.
type Refusals struct {
	counter *prometheus.CounterVec
	now     func() time.Time

	mu     sync.Mutex
	seen   map[refusalKey]*refusalSeen
	paths  map[string]bool
	pruned time.Time // the last prune: at most one a second, so a flood from many addresses costs no scan each
}

type refusalKey struct {
	listener string
	reason   Refusal
	addr     string // the remote IP, without the port
	path     string // for a wrong path
}

type refusalSeen struct {
	logged     time.Time
	suppressed int // refusals logged at debug since
}

// NewRefusals returns a Refusals registered with reg (if not nil), with
// every listener and reason at 0.
func NewRefusals(reg prometheus.Registerer) *Refusals {
	r := &Refusals{now: time.Now, seen: map[refusalKey]*refusalSeen{}, paths: map[string]bool{},
		counter: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_auth_failures_total",
			Help: "Connections refused before the upgrade, by listener and reason: missing or wrong token, wrong path, bad Origin or Host, not a WebSocket handshake; the upstream's also for X-Client-Role, a bad X-Self-ID, or one without the connected account's X-Self-ID."},
			[]string{"listener", "reason"})}
	for l, reasons := range refusalsOf {
		for _, reason := range reasons {
			r.counter.WithLabelValues(l, string(reason))
		}
	}
	if reg != nil {
		reg.MustRegister(r.counter)
	}
	return r
}

// Refuse counts req's refusal on listener for reason and logs msg with
// args (key-value pairs, as for slog), the remote address and the path.
func (r *Refusals) Refuse(log *slog.Logger, listener string, reason Refusal, req *http.Request, msg string, args ...any) {
	path := req.URL.Path
	if len(path) > pathBytes {
		path = path[:pathBytes] + "…"
	}
	args = append(args, "reason", string(reason), "path", path, "remote", req.RemoteAddr)
	level := slog.LevelWarn
	if r != nil {
		r.counter.WithLabelValues(listener, string(reason)).Inc()
		var suppressed int
		level, suppressed = r.level(listener, reason, req.RemoteAddr, path)
		if suppressed > 0 {
			args = append(args, "refused_meanwhile", suppressed)
		}
	}
	if level == slog.LevelWarn && r != nil {
		args = append(args, "note", "further refusals of this address for this reason are logged at debug for a minute; obmux_auth_failures_total counts every one")
	}
	log.Log(context.Background(), level, msg, args...)
}

// level returns the level of a refusal and, at warn, how many refusals of
// its kind were logged at debug since the last warn.
func (r *Refusals) level(listener string, reason Refusal, remote, path string) (slog.Level, int) {
	addr, _, err := net.SplitHostPort(remote)
	if err != nil {
		addr = remote
	}
	k := refusalKey{listener: listener, reason: reason, addr: addr}
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if reason == RefusedWrongPath {
		// Every distinct wrong path is worth a line (it says what the
		// implementation was told), up to a bound.
		if !r.paths[path] && len(r.paths) < wrongPaths {
			r.paths[path] = true
		}
		if r.paths[path] {
			k.path = path
		}
	}
	s := r.seen[k]
	if s != nil && now.Sub(s.logged) < refusalWindow {
		s.suppressed++
		return slog.LevelDebug, 0
	}
	if s == nil {
		if len(r.seen) >= refusalKeys && now.Sub(r.pruned) >= time.Second {
			r.prune(now)
		}
		if len(r.seen) >= refusalKeys {
			return slog.LevelDebug, 0 // a flood from many addresses: counted, not logged
		}
		s = &refusalSeen{}
		r.seen[k] = s
	}
	suppressed := s.suppressed
	s.logged, s.suppressed = now, 0
	return slog.LevelWarn, suppressed
}

// prune forgets the pairs whose minute is over.
func (r *Refusals) prune(now time.Time) {
	r.pruned = now
	for k, s := range r.seen {
		if now.Sub(s.logged) >= refusalWindow {
			delete(r.seen, k)
		}
	}
}
