package proxy

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"golang.org/x/time/rate"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/onebot"
)

// SendLimit is the account-wide rate limit on the message-sending actions
// (OBMUX_SEND_RATE, OBMUX_SEND_BURST, OBMUX_SEND_ACTIONS): QQ's risk control
// watches the account, not the bot, so one token bucket serves every
// caller. A send over the rate waits in a queue, none is dropped; the
// callers with sends waiting are served in turn, one send each, so that one
// bot's burst does not hold another's single reply behind it. Other calls
// never wait for it.
type SendLimit struct {
	// Rate is how many sends a second the account may make; 0 turns the
	// limit off.
	Rate rate.Limit
	// Burst is how many may go at once after a quiet spell (at least 1).
	Burst int
	// Actions are the limited actions, without their _async and
	// _rate_limited forms (which are limited with them).
	Actions []string
	// Spec is the rate as configured ("20/m"), for messages.
	Spec string
}

// sendQueue holds the sends waiting for the rate limit. Its fields but lim
// and actions are guarded by the Router's mu.
type sendQueue struct {
	lim     *rate.Limiter
	actions map[string]struct{}
	spec    string
	waiting map[Caller][]*call // each caller's sends waiting, oldest first
	order   []Caller           // the callers with sends waiting, next first
	running bool               // the dispatcher runs
	// changed is closed and replaced when a call leaves the queue other
	// than to be sent (timed out, its caller or the upstream gone).
	changed  chan struct{}
	timeouts health.FailureLog // a run of sends timed out in the queue is logged once
}

// newSendQueue returns the queue of l, or nil when l is off.
func newSendQueue(l SendLimit) *sendQueue {
	if l.Rate <= 0 {
		return nil
	}
	q := &sendQueue{lim: rate.NewLimiter(l.Rate, max(l.Burst, 1)), actions: map[string]struct{}{}, spec: l.Spec,
		waiting: map[Caller][]*call{}, changed: make(chan struct{})}
	for _, a := range l.Actions {
		q.actions[a] = struct{}{}
	}
	return q
}

// limits reports whether action (as onebot.BaseAction reads it) is a send
// the limit applies to. A nil queue limits nothing.
func (q *sendQueue) limits(action []byte) bool {
	if q == nil {
		return false
	}
	_, ok := q.actions[string(action)]
	return ok
}

// now reports whether a send may go at once: none waits and the bucket
// has a token, which it takes. r.mu held.
func (q *sendQueue) now() bool {
	return len(q.order) == 0 && q.lim.Allow()
}

// push queues cl, with frame, behind its caller's other sends, and starts
// the dispatcher if it does not run. r.mu held.
func (q *sendQueue) push(r *Router, cl *call, frame []byte) {
	cl.queued, cl.frame = true, frame
	c := cl.caller
	if len(q.waiting[c]) == 0 {
		q.order = append(q.order, c)
	}
	q.waiting[c] = append(q.waiting[c], cl)
	c.Stats().M.SendQueue.Inc()
	if !q.running {
		q.running = true
		go r.dispatch()
	}
}

// pop takes the next send: the oldest of the caller whose turn it is, who
// then goes to the back of the line. r.mu held.
func (q *sendQueue) pop() *call {
	if len(q.order) == 0 {
		return nil
	}
	c := q.order[0]
	q.order = slices.Delete(q.order, 0, 1)
	w := q.waiting[c]
	cl := w[0]
	w[0] = nil
	if w = w[1:]; len(w) > 0 {
		q.waiting[c] = w
		q.order = append(q.order, c)
	} else {
		delete(q.waiting, c)
	}
	q.left(cl)
	return cl
}

// remove takes cl out of the queue, if it is there, and wakes the
// dispatcher. r.mu held. A nil queue holds nothing.
func (q *sendQueue) remove(cl *call) {
	if q == nil || !cl.queued {
		return
	}
	c := cl.caller
	w := slices.DeleteFunc(q.waiting[c], func(x *call) bool { return x == cl })
	if len(w) > 0 {
		q.waiting[c] = w
	} else {
		delete(q.waiting, c)
		q.order = slices.DeleteFunc(q.order, func(x Caller) bool { return x == c })
	}
	q.left(cl)
	close(q.changed)
	q.changed = make(chan struct{})
	if len(q.order) == 0 {
		q.timeouts.Reset() // the queue ran dry: a new run of timeouts is news
	}
}

// left records that cl left the queue. r.mu held.
func (q *sendQueue) left(cl *call) {
	m := cl.caller.Stats().M
	m.SendQueue.Dec()
	m.SendWait.Observe(time.Since(cl.start).Seconds())
	cl.queued = false
}

// dispatch sends the queued sends as the bucket allows, in turn across
// callers, until the queue is empty.
func (r *Router) dispatch() {
	q := r.sends
	for {
		r.mu.Lock()
		if len(q.order) == 0 {
			q.running = false
			r.mu.Unlock()
			return
		}
		changed := q.changed
		r.mu.Unlock()
		if !r.awaitToken(q.lim.Reserve(), changed) {
			return
		}
		r.mu.Lock()
		cl := q.pop()
		if cl == nil {
			// The sends left while the token came: it is spent unused,
			// which only delays the next send (never too many go).
			q.running = false
			r.mu.Unlock()
			return
		}
		frame, send := cl.frame, r.send
		cl.frame = nil
		r.mu.Unlock()
		r.transmit(cl, frame, send)
	}
}

// awaitToken waits until res may act. It reports false, with res cancelled
// and the dispatcher stopped, when the queue emptied meanwhile.
func (r *Router) awaitToken(res *rate.Reservation, changed <-chan struct{}) bool {
	d := res.Delay()
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	q := r.sends
	for {
		select {
		case <-t.C:
			return true
		case <-changed:
		}
		r.mu.Lock()
		empty := len(q.order) == 0
		if empty {
			q.running = false
		}
		changed = q.changed
		r.mu.Unlock()
		if empty {
			res.Cancel()
			return false
		}
	}
}

// errSendRate is the failure of a send that waited out OBMUX_API_TIMEOUT
// in the queue.
var errSendRate = errors.New("sends waited out OBMUX_API_TIMEOUT in the queue of the account's send rate limit")

// timedOut answers cl, which waited out its timeout in the queue (and
// was never sent), with 1504.
func (q *sendQueue) timedOut(r *Router, cl *call) {
	q.timeouts.Log(r.log.With("caller", cl.caller.Stats().Name, "rate", q.spec), "a send timed out waiting for the send rate limit (repeats are logged at debug until the queue runs dry)",
		errSendRate, "the bots send faster than OBMUX_SEND_RATE allows, for longer than OBMUX_API_TIMEOUT: raise OBMUX_SEND_RATE/OBMUX_SEND_BURST (mind QQ's risk control) or OBMUX_API_TIMEOUT")
	r.fail(cl.caller, cl.echo, onebot.RetcodeUpstreamTimeout,
		fmt.Sprintf("obmux: waited OBMUX_API_TIMEOUT=%s for the send rate limit (OBMUX_SEND_RATE=%s); the message was not sent", r.timeout, q.spec),
		health.OutcomeTimeout)
}
