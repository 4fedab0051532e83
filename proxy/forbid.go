package proxy

import (
	"fmt"
	"strconv"
	"sync"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/onebot"
)

// forbidLog remembers which actions of which callers were refused, so that
// each is logged once (at warn) and its repeats at debug. It holds at most
// maxForbidLog pairs, with actions cut to maxLoggedAction bytes: a caller
// that invents action names cannot grow it; past the bound every refusal is
// logged at debug.
type forbidLog struct {
	mu   sync.Mutex
	seen map[string]struct{}
}

const (
	maxForbidLog    = 1024
	maxLoggedAction = 64
)

// first reports whether name's action is refused for the first time.
func (l *forbidLog) first(name, action string) bool {
	key := name + "\x00" + action
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.seen[key]; ok || len(l.seen) >= maxForbidLog {
		return false
	}
	if l.seen == nil {
		l.seen = map[string]struct{}{}
	}
	l.seen[key] = struct{}{}
	return true
}

// Forbid answers API request b of c (scanned as f, action its action as
// onebot.BaseAction reads it) with a 1403 failure at once, carrying c's
// echo: c's policy (API_ALLOW, API_DENY) does not permit the action, so the
// call never reaches the upstream. It is counted as forbidden and logged
// once per action and caller, then at debug.
func (r *Router) Forbid(c Caller, b []byte, f onebot.Frame, action []byte) {
	name := c.Stats().Name
	shown := action
	if len(shown) > maxLoggedAction {
		shown = shown[:maxLoggedAction]
	}
	msg := fmt.Sprintf("obmux: this bot may not call %s (refused by its API_ALLOW/API_DENY policy; the call was not sent)", strconv.Quote(string(shown)))
	log := r.log.With("caller", name, "action", string(shown))
	if r.forbidden.first(name, string(shown)) {
		log.Warn("API call refused by the bot's policy (repeats of this action are logged at debug)",
			"hint", "allow it in OBMUX_TARGET_<NAME>_API_ALLOW / _API_DENY (OBMUX_FORWARD_* for forward clients) if the bot needs it")
	} else {
		log.Debug("API call refused by the bot's policy")
	}
	r.fail(c, onebot.Raw(b, f.Echo), onebot.RetcodeForbidden, msg, health.OutcomeForbidden)
}
