package natsbus

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/onebot"
	"github.com/obmux/obmux/policy"
	"github.com/obmux/obmux/proxy"
)

// queueGroup is the queue group of the API subscription: of several
// account-side replicas, one answers each request.
const queueGroup = "obmux"

// API serves the account's OneBot API on onebot.<self_id>.api: each request
// body is an action frame, routed like a WebSocket caller's call (echo
// isolation, 1400/1502/1504, the in-flight bounds), and the reply is its
// response. Create it with NewAPI and call Run.
type API struct {
	nc     *nats.Conn
	router *proxy.Router
	// byName are the callers named by OBMUX_NATS_CALLER_<NAME>_*, by
	// CallerKey; anyone is every other request's.
	byName map[string]*callerKind
	anyone *callerKind
	acct   *health.Account
	log    *slog.Logger
	// slots bounds the NATS calls in flight (OBMUX_API_MAX_INFLIGHT for all
	// NATS callers together); a request waiting for one holds the
	// subscription's delivery, so what NATS delivers meanwhile waits in the
	// client's bounded pending buffer.
	slots chan struct{}
	gone  chan struct{} // closed when Run returns: waiting requests give up

	mu     sync.Mutex // orders wg.Go after Stop
	sub    *nats.Subscription
	closed bool
	wg     sync.WaitGroup // the calls in flight
}

// callerKind is what the requests of one named caller (or of the unnamed)
// share: their API policy and their metrics.
type callerKind struct {
	acl   policy.ACL
	stats *health.Stats
}

// CallerHeader names the caller of an API request over NATS: an edge sends
// its consumer name. A caller named by OBMUX_NATS_CALLER_<NAME>_* gets its
// own policy and metrics (name "nats:<name>"); any other, the default.
const CallerHeader = "Obmux-Caller"

// CallerKey is how a caller's name is looked up: lower case, with '-' and
// '.' as '_' (environment variable names hold neither).
func CallerKey(name string) string {
	return strings.NewReplacer("-", "_", ".", "_").Replace(strings.ToLower(name))
}

// NewAPI returns an API that routes the calls their caller's policy
// permits through router: acl for any caller, named[CallerKey(name)] for
// a named one; at most maxInflight calls are in flight at once.
func NewAPI(nc *nats.Conn, router *proxy.Router, acl policy.ACL, named map[string]policy.ACL, acct *health.Account,
	mon *health.Monitor, maxInflight int, log *slog.Logger) *API {
	kind := func(name string, acl policy.ACL) *callerKind {
		st := mon.Track(health.RoleNATS, name)
		st.Up()
		return &callerKind{acl: acl, stats: st}
	}
	a := &API{nc: nc, router: router, anyone: kind("nats", acl), byName: map[string]*callerKind{}, acct: acct, log: log,
		slots: make(chan struct{}, max(maxInflight, 1)), gone: make(chan struct{})}
	for name, acl := range named {
		a.byName[CallerKey(name)] = kind("nats:"+CallerKey(name), acl)
	}
	return a
}

// kindOf returns the kind of msg's caller.
func (a *API) kindOf(msg *nats.Msg) *callerKind {
	if k := a.byName[CallerKey(msg.Header.Get(CallerHeader))]; k != nil {
		return k
	}
	return a.anyone
}

// Run subscribes to the API subject of the account once its self_id is
// known, follows a change of self_id, and returns when ctx is done, after
// the calls in flight were answered.
func (a *API) Run(ctx context.Context) {
	defer func() {
		a.anyone.stats.Untrack()
		for _, k := range a.byName {
			k.stats.Untrack()
		}
	}()
	defer a.wg.Wait()
	defer close(a.gone)
	defer a.Stop()
	ch := a.acct.Watch()
	var subscribed int64
	for {
		if id := a.acct.State().SelfID; id != 0 && id != subscribed && a.subscribe(id) {
			subscribed = id
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// subscribe serves the API subject of id (and no other).
func (a *API) subscribe(id int64) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return false
	}
	if a.sub != nil {
		_ = a.sub.Unsubscribe()
	}
	sub, err := a.nc.QueueSubscribe(APISubject(id), queueGroup, a.handle)
	if err != nil {
		a.log.Error("NATS API not served", "subject", APISubject(id), "error", err)
		return false
	}
	a.sub = sub
	a.log.Info("NATS API served", "subject", APISubject(id), "queue", queueGroup)
	return true
}

// Stop stops taking requests: the subscription ends, and the server hears
// so before Stop returns, so that another replica in the queue group
// answers from then on. Calls in flight are still answered. At shutdown it
// comes first, before the upstream goes.
func (a *API) Stop() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return
	}
	a.closed = true
	if a.sub != nil {
		_ = a.sub.Unsubscribe()
		_ = a.nc.FlushTimeout(time.Second)
	}
}

// handle is the subscription's handler: one request.
func (a *API) handle(msg *nats.Msg) {
	if msg.Reply == "" {
		return // a publish, not a request: nobody to answer
	}
	select {
	case a.slots <- struct{}{}:
	case <-a.gone:
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		<-a.slots
		return // not answered: the requester's other replica, or its timeout
	}
	c := &caller{msg: msg, api: a, kind: a.kindOf(msg), done: make(chan struct{})}
	a.wg.Go(func() {
		defer func() { <-a.slots }()
		a.call(c)
		// Every call is answered once (the router's timeout at the
		// latest); then the router forgets this one-call caller.
		select {
		case <-c.done:
		case <-a.gone:
		}
		a.router.Forget(c)
	})
}

// call hands c's request to the router.
func (a *API) call(c *caller) {
	b := c.msg.Data
	f, kind, err := onebot.Classify(b)
	switch {
	case kind != onebot.KindAPIRequest:
		why := "not an API request"
		if err != nil {
			why += ": " + err.Error()
		}
		a.router.Reject(c, b, f, why)
	case !c.kind.acl.Permits(onebot.BaseAction(b, f)):
		a.router.Forbid(c, b, f, onebot.BaseAction(b, f))
	default:
		a.router.Request(c, b, f)
	}
}

// caller is one NATS request as a proxy.Caller: its response is the reply.
type caller struct {
	msg  *nats.Msg
	api  *API
	kind *callerKind
	once sync.Once
	done chan struct{} // closed once answered
}

func (c *caller) Deliver(frame []byte) {
	c.once.Do(func() {
		if err := c.msg.Respond(frame); err != nil {
			c.api.log.Debug("NATS API reply not sent", "error", err)
		}
		close(c.done)
	})
}

func (c *caller) Stats() *health.Stats  { return c.kind.stats }
func (c *caller) Gone() <-chan struct{} { return c.api.gone }
func (c *caller) Hold(bool)             {}

// MessageFormat: a NATS caller gets messages as the upstream sends them.
func (c *caller) MessageFormat() onebot.MessageFormat { return onebot.FormatAsIs }
