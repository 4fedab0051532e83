package natsbus

import (
	"context"
	"log/slog"
	"sync"

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
	acl    policy.ACL // OBMUX_NATS_API_ALLOW / _API_DENY
	acct   *health.Account
	stats  *health.Stats
	log    *slog.Logger
	// slots bounds the requests being handed to the router at once; a
	// request waiting for one holds the subscription's delivery, so what
	// NATS delivers meanwhile waits in the client's bounded pending buffer.
	slots chan struct{}
	gone  chan struct{} // closed when Run returns: waiting requests give up
	wg    sync.WaitGroup
}

// NewAPI returns an API that routes the calls acl permits through router,
// with at most maxInflight requests being handed to it at once.
func NewAPI(nc *nats.Conn, router *proxy.Router, acl policy.ACL, acct *health.Account, mon *health.Monitor, maxInflight int, log *slog.Logger) *API {
	st := mon.Track(health.RoleNATS, "nats")
	st.Up()
	return &API{nc: nc, router: router, acl: acl, acct: acct, stats: st, log: log,
		slots: make(chan struct{}, max(maxInflight, 1)), gone: make(chan struct{})}
}

// Run subscribes to the API subject of the account once its self_id is
// known, follows a change of self_id, and returns when ctx is done.
func (a *API) Run(ctx context.Context) {
	defer a.stats.Untrack()
	defer a.wg.Wait()
	defer close(a.gone)
	ch := a.acct.Watch()
	var sub *nats.Subscription
	var subscribed int64
	for {
		if id := a.acct.State().SelfID; id != 0 && id != subscribed {
			if sub != nil {
				_ = sub.Unsubscribe()
			}
			var err error
			if sub, err = a.nc.QueueSubscribe(APISubject(id), queueGroup, a.handle); err != nil {
				a.log.Error("NATS API not served", "subject", APISubject(id), "error", err)
			} else {
				subscribed = id
				a.log.Info("NATS API served", "subject", APISubject(id), "queue", queueGroup)
			}
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if sub != nil {
				_ = sub.Unsubscribe()
			}
			return
		}
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
	c := &caller{msg: msg, api: a}
	a.wg.Go(func() {
		defer func() { <-a.slots }()
		f, kind, err := onebot.Classify(msg.Data)
		if kind != onebot.KindAPIRequest {
			why := "not an API request"
			if err != nil {
				why += ": " + err.Error()
			}
			a.router.Reject(c, msg.Data, f, why)
			return
		}
		if action := onebot.BaseAction(msg.Data, f); !a.acl.Permits(action) {
			a.router.Forbid(c, msg.Data, f, action)
			return
		}
		a.router.Request(c, msg.Data, f)
	})
}

// caller is one NATS request as a proxy.Caller: its response is the reply.
type caller struct {
	msg  *nats.Msg
	api  *API
	once sync.Once
}

func (c *caller) Deliver(frame []byte) {
	c.once.Do(func() {
		if err := c.msg.Respond(frame); err != nil {
			c.api.log.Debug("NATS API reply not sent", "error", err)
		}
	})
}

func (c *caller) Stats() *health.Stats  { return c.api.stats }
func (c *caller) Gone() <-chan struct{} { return c.api.gone }
func (c *caller) Hold(bool)             {}

// MessageFormat: a NATS caller gets messages as the upstream sends them.
func (c *caller) MessageFormat() onebot.MessageFormat { return onebot.FormatAsIs }
