package proxy

import (
	"bytes"
	crand "crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync"
	"time"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/onebot"
)

// Caller is a connection that makes API calls through a Router: a target or
// a client.
type Caller interface {
	// Deliver queues a response frame for the caller; it must not block.
	Deliver(frame []byte)
	// Stats returns the caller's state and metrics.
	Stats() *health.Stats
	// Gone is closed when the caller's connection ends: a request waiting
	// for one of the caller's in-flight slots gives up then.
	Gone() <-chan struct{}
	// Hold(true) is called before Request waits for a slot, which pauses
	// the caller's reader, and Hold(false) after: keepalive must not take
	// the pause for a dead peer.
	Hold(on bool)
	// MessageFormat is the format the caller wants messages in, in the
	// responses of the calls that return messages (get_msg,
	// get_forward_msg, the message histories); FormatAsIs: as the
	// upstream sends them.
	MessageFormat() onebot.MessageFormat
}

// Router routes API calls from callers to the upstream and their responses
// back. Every call gets exactly one final response: the upstream's, or one of
// obmux's own failures. It is safe for concurrent use.
type Router struct {
	timeout   time.Duration
	lim       Limits
	log       *slog.Logger
	timeouts  health.FailureLog // a run of timeouts is logged once
	forbidden forbidLog         // refused actions already logged
	// formatErrs: responses a caller's message format could not be made of.
	formatErrs health.FailureLog
	prefix     []byte     // `"obmux:<random>:` starts every echo this Router makes
	sends      *sendQueue // nil: no send rate limit

	mu      sync.Mutex
	send    sendFunc
	seq     uint64
	tags    *rand.ChaCha8 // each call's random tag
	pending map[uint64]*call
	callers map[Caller]*inflight // each caller's calls in flight
	total   int64                // the bytes of every call in flight
	freed   chan struct{}        // closed and replaced when a call ends
}

// sendFunc writes a frame to the upstream, or queues it for the upstream's
// writer; once it returned nil, it calls left when the frame has left that
// queue (written, or dropped with the connection).
type sendFunc func(frame []byte, left func()) error

// Limits bound the calls in flight: from the moment Request takes a call
// until its final response (or obmux's failure) is handed to the caller, or,
// when that comes first (a timeout), until its frame has left the
// upstream's queue: the bytes waiting there are bounded too.
type Limits struct {
	// Calls is how many calls one caller may have in flight (at least 1).
	Calls int
	// Bytes bounds the bytes of one caller's calls in flight (0: no
	// bound); one call larger than Bytes is taken alone.
	Bytes int64
	// TotalBytes bounds the bytes of every caller's calls in flight
	// together (0: no bound), so that the upstream's queue, bounded as
	// much, never refuses one; one call larger is taken alone.
	TotalBytes int64
	// Send is the account-wide rate limit on sends. While it is on, the
	// sends waiting for it count against Calls and Bytes apart from the
	// caller's other calls (so that a caller's get_* never waits behind
	// its own queued sends), and against TotalBytes with them.
	Send SendLimit
}

// lane is which of a caller's budgets a call counts against.
type lane uint8

const (
	laneCalls lane = iota // every call, when sends are not rate-limited
	laneSends             // the sends, when they are
	numLanes
)

// inflight is what one caller has in flight, per lane.
type inflight [numLanes]struct {
	calls int
	bytes int64
}

type call struct {
	id     uint64
	caller Caller
	echo   []byte // a copy of the caller's raw echo; nil when it sent none
	tag    uint64 // the random part of obmux's echo for it
	cost   int64  // the bytes it counts against the limits
	lane   lane
	start  time.Time
	timer  *time.Timer
	// While queued for the send rate limit (r.mu): the frame to send.
	queued bool
	frame  []byte
	// writing: its frame is in the upstream's queue; settled: it was
	// answered meanwhile, and is released once the frame has left (r.mu).
	writing, settled bool
	// action, when not empty, returns messages that the response is to
	// carry in format.
	action string
	format onebot.MessageFormat
}

// callOverhead is what a call costs beyond its request's bytes: obmux's echo
// (the frame sent upstream may be that much longer) and the call itself.
const callOverhead = 128

// NewRouter returns a Router whose calls fail with 1504 after timeout. A
// caller's calls in flight are bounded by lim, in number and in bytes;
// Request blocks its next one (and so stops reading from that caller) until
// enough end, so that one caller flooding the API cannot starve the others
// nor make obmux hold more than lim.TotalBytes of calls: a caller over a
// bound waits, and no call is refused for it.
//
// The echoes it sends upstream cannot be guessed: "obmux:<P>:<id>:<T>" with
// P 128 random bits drawn once per Router and T 64 bits drawn per call from
// a ChaCha8 stream seeded from crypto/rand. A response is routed only by an
// echo byte-identical to the one made for a pending call, so a peer that
// slips its own echo past obmux (through a parser differential) cannot name
// another caller's call, and a previous process's late response is not
// taken for this one's.
//
// With lim.Send on, the sends go out at most at its rate for the whole
// account, in turn across callers (see SendLimit).
func NewRouter(timeout time.Duration, lim Limits, log *slog.Logger) *Router {
	lim.Calls = max(lim.Calls, 1)
	var p [16]byte
	var seed [32]byte
	crand.Read(p[:]) // never fails (crypto/rand.Read crashes the program rather than return an error)
	crand.Read(seed[:])
	prefix := base64.RawURLEncoding.AppendEncode([]byte(`"obmux:`), p[:])
	return &Router{timeout: timeout, lim: lim, log: log, prefix: append(prefix, ':'), tags: rand.NewChaCha8(seed),
		sends:   newSendQueue(lim.Send),
		pending: map[uint64]*call{}, callers: map[Caller]*inflight{}, freed: make(chan struct{})}
}

// acquire counts a call of cost bytes against c's limits in lane l and the
// total, waiting while it would exceed any. It reports false when c went
// away while waiting.
func (r *Router) acquire(c Caller, l lane, cost int64) bool {
	held := false
	defer func() {
		if held {
			c.Hold(false)
		}
	}()
	for {
		r.mu.Lock()
		all := r.callers[c]
		if all == nil {
			all = &inflight{}
			r.callers[c] = all
		}
		in := &all[l]
		var over string
		switch {
		case in.calls >= r.lim.Calls:
			over = "OBMUX_API_MAX_INFLIGHT"
		case r.lim.Bytes > 0 && in.bytes > 0 && in.bytes+cost > r.lim.Bytes:
			over = "OBMUX_API_MAX_INFLIGHT_BYTES"
		case r.lim.TotalBytes > 0 && r.total > 0 && r.total+cost > r.lim.TotalBytes:
			over = "the bytes in flight for all callers together (OBMUX_QUEUE_BYTES)"
		}
		if over == "" {
			in.calls++
			in.bytes += cost
			r.total += cost
			r.mu.Unlock()
			return true
		}
		freed := r.freed
		r.mu.Unlock()
		if !held {
			if l == laneSends {
				over += " (of its sends waiting for OBMUX_SEND_RATE)"
			}
			r.log.Debug("caller at its in-flight limit: reading from it waits", "caller", c.Stats().Name, "limit", over, "bytes", cost)
			c.Hold(true)
			held = true
		}
		select {
		case <-freed:
		case <-c.Gone():
			return false
		}
	}
}

// release gives back what cl counted, once it has been answered: at once,
// or, while its frame still waits in the upstream's queue (a call that timed
// out behind a slow upstream), when the frame has left it.
func (r *Router) release(cl *call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if cl.writing {
		cl.settled = true
		return
	}
	r.releaseLocked(cl)
}

// left records that cl's frame has left the upstream's queue, and releases
// cl if it was answered meanwhile.
func (r *Router) left(cl *call) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cl.writing = false
	if cl.settled {
		cl.settled = false
		r.releaseLocked(cl)
	}
}

// releaseLocked gives back what cl counted. A caller forgotten meanwhile
// counts nothing any more; the total still does. r.mu held.
func (r *Router) releaseLocked(cl *call) {
	if all := r.callers[cl.caller]; all != nil {
		all[cl.lane].calls--
		all[cl.lane].bytes -= cl.cost
	}
	r.total -= cl.cost
	r.wake()
}

// wake tells the callers waiting in acquire that calls ended. r.mu held.
func (r *Router) wake() {
	close(r.freed)
	r.freed = make(chan struct{})
}

// InflightBytes returns the bytes of every call in flight.
func (r *Router) InflightBytes() int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total
}

// setSend installs the function that writes a frame to the upstream (nil:
// none connected).
func (r *Router) setSend(send sendFunc) {
	r.mu.Lock()
	r.send = send
	r.mu.Unlock()
}

// Attach installs send as the way to the upstream for a source of events
// other than Upstream (the NATS edge, whose calls are NATS requests); nil
// detaches it, and calls made meanwhile fail with 1502.
func (r *Router) Attach(send func([]byte) error) {
	if send == nil {
		r.setSend(nil)
		return
	}
	r.setSend(func(b []byte, left func()) error {
		err := send(b)
		if err == nil {
			left() // nothing waits in a queue of obmux's
		}
		return err
	})
}

// Pending returns how many calls wait for a response.
func (r *Router) Pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pending)
}

// Request forwards the API request b, scanned as f, from c to the upstream
// under a fresh echo. With the send rate limit on, a send that must wait
// for it is queued and Request returns; every other call is sent at once.
//
// b is not kept: the call holds a copy of its echo only (and, while
// queued, of its frame).
func (r *Router) Request(c Caller, b []byte, f onebot.Frame) {
	l := laneCalls
	if r.sends != nil && r.sends.limits(onebot.BaseAction(b, f)) {
		l = laneSends
	}
	cost := int64(len(b)) + callOverhead
	if !r.acquire(c, l, cost) {
		return
	}
	echo := bytes.Clone(onebot.Raw(b, f.Echo))
	r.mu.Lock()
	send := r.send
	if send == nil {
		r.mu.Unlock()
		r.release(&call{caller: c, cost: cost, lane: l})
		r.fail(c, echo, onebot.RetcodeUpstreamDown, "upstream not connected", health.OutcomeUpstreamDown)
		return
	}
	r.seq++
	id := r.seq
	cl := &call{id: id, caller: c, echo: echo, tag: r.tags.Uint64(), cost: cost, lane: l, start: time.Now()}
	if cl.format = c.MessageFormat(); cl.format != onebot.FormatAsIs {
		cl.action = onebot.MessageAction(b, f)
	}
	cl.timer = time.AfterFunc(r.timeout, func() { r.expire(id) })
	r.pending[id] = cl
	queue := l == laneSends && !r.sends.now()
	r.mu.Unlock()

	frame := onebot.SetEcho(b, f, r.echo(id, cl.tag))
	if queue {
		r.mu.Lock()
		if r.pending[id] == cl { // not already answered
			r.sends.push(r, cl, frame)
		}
		r.mu.Unlock()
		return
	}
	if l == laneSends {
		c.Stats().M.SendWait.Observe(0) // under the rate: it did not wait
	}
	r.transmit(cl, frame, send)
}

// transmit writes cl's frame to the upstream with send (nil: none
// connected) and answers cl with 1502 when that fails.
func (r *Router) transmit(cl *call, frame []byte, send sendFunc) {
	err := errors.New("upstream not connected")
	if send != nil {
		r.mu.Lock()
		cl.writing = true
		r.mu.Unlock()
		if err = send(frame, func() { r.left(cl) }); err == nil {
			return
		}
		r.left(cl) // not queued after all
	}
	if r.take(cl.id) != nil {
		r.release(cl)
		r.fail(cl.caller, cl.echo, onebot.RetcodeUpstreamDown, err.Error(), health.OutcomeUpstreamDown)
	}
}

// Undelivered answers the call that frame (as handed to the send function,
// with obmux's echo) belongs to with 1502 and why: the way to the upstream
// failed after send returned (on the NATS edge, a request nobody answered).
// It reports false when no call waits for it.
func (r *Router) Undelivered(frame []byte, why string) bool {
	f, err := onebot.Scan(frame)
	if err != nil {
		return false
	}
	id, tag, ok := r.parseEcho(onebot.Raw(frame, f.Echo))
	if !ok {
		return false
	}
	r.mu.Lock()
	cl := r.pending[id]
	r.mu.Unlock()
	if cl == nil || cl.tag != tag || r.take(id) == nil {
		return false
	}
	cl.timer.Stop()
	r.release(cl)
	r.fail(cl.caller, cl.echo, onebot.RetcodeUpstreamDown, why, health.OutcomeUpstreamDown)
	return true
}

// MaxRejectEcho is the longest echo a 1400 failure carries back: anyone who
// can connect may send frames that are not calls, and their answers must not
// cost obmux more than the frames' count.
const MaxRejectEcho = 1 << 10

// Reject answers a frame from c that is not a usable API request with a 1400
// failure, carrying the frame's echo when one could be read and is at most
// MaxRejectEcho bytes (the message says when it was left out).
func (r *Router) Reject(c Caller, b []byte, f onebot.Frame, why string) {
	echo := onebot.Raw(b, f.Echo)
	if len(echo) > MaxRejectEcho {
		echo = nil
		why += fmt.Sprintf(" (echo not returned: longer than %d bytes)", MaxRejectEcho)
	}
	r.fail(c, echo, onebot.RetcodeBadRequest, why, health.OutcomeFailed)
}

// Response routes a response frame b, scanned as f, from the upstream to its
// caller, with the caller's echo restored. It reports false when no call
// waits for it (unknown or foreign echo, or its caller is gone).
func (r *Router) Response(b []byte, f onebot.Frame) bool {
	id, tag, ok := r.parseEcho(onebot.Raw(b, f.Echo))
	if !ok {
		return false
	}
	streaming := r.isStreamPart(b, f)
	r.mu.Lock()
	cl := r.pending[id]
	if cl == nil || cl.tag != tag || cl.queued { // a queued call was never sent: a forged echo
		r.mu.Unlock()
		return false
	}
	if streaming {
		cl.timer.Reset(r.timeout)
	} else {
		delete(r.pending, id)
		cl.timer.Stop()
	}
	r.mu.Unlock()
	out := onebot.SetEcho(b, f, cl.echo)
	if cl.action != "" && !streaming {
		out = r.convert(out, cl)
	}
	cl.caller.Deliver(out)
	if !streaming {
		r.timeouts.Reset()
		r.release(cl)
		m := cl.caller.Stats().M
		outcome := health.OutcomeOK
		if onebot.Is(b, f.Status, "failed") {
			outcome = health.OutcomeFailed
		}
		m.API[outcome].Inc()
		m.APIDuration.Observe(time.Since(cl.start).Seconds())
	}
	return true
}

// convert returns response b of cl with its messages in the caller's
// format; b itself when there is nothing to convert or it cannot be.
func (r *Router) convert(b []byte, cl *call) []byte {
	f, err := onebot.Scan(b)
	if err == nil {
		var out []byte
		if out, err = onebot.ConvertResponse(b, f, cl.action, cl.format); out != nil {
			return out
		}
	}
	if err != nil {
		cl.caller.Stats().M.Unconverted.Inc()
		r.formatErrs.Log(r.log.With("caller", cl.caller.Stats().Name, "action", cl.action),
			"response passed in the upstream's message format: it cannot be converted", err,
			"the caller's OBMUX_*_MESSAGE_FORMAT is not applied to this one")
	}
	return b
}

// isStreamPart reports whether b is an intermediate frame of a NapCat
// streaming action: "stream":"stream-action" and data.type "stream".
func (r *Router) isStreamPart(b []byte, f onebot.Frame) bool {
	if !onebot.Is(b, f.Stream, "stream-action") || !f.Data.Valid() {
		return false
	}
	data := onebot.Raw(b, f.Data)
	df, err := onebot.Scan(data)
	return err == nil && onebot.Is(data, df.Type, "stream")
}

// Forget drops every call of c, which has gone away; their responses will
// be dropped as target_gone. It returns how many were dropped.
func (r *Router) Forget(c Caller) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for id, cl := range r.pending {
		if cl.caller == c {
			cl.timer.Stop()
			delete(r.pending, id)
			r.sends.remove(cl)
			if cl.writing {
				cl.settled = true // the total counts it until it has left
			} else {
				r.total -= cl.cost
			}
			n++
		}
	}
	delete(r.callers, c)
	r.wake()
	return n
}

// UpstreamDown answers every pending call with 1502: the upstream they were
// sent to is gone, and their responses will never come. The sends queued
// for the rate limit are answered so too, at once, rather than sent later
// on another connection, long after their callers gave up.
func (r *Router) UpstreamDown() {
	r.mu.Lock()
	calls := r.pending
	r.pending = map[uint64]*call{}
	for _, cl := range calls {
		r.sends.remove(cl)
	}
	r.mu.Unlock()
	for _, cl := range calls {
		cl.timer.Stop()
		r.release(cl)
		r.fail(cl.caller, cl.echo, onebot.RetcodeUpstreamDown, "upstream disconnected", health.OutcomeUpstreamDown)
	}
}

// take removes call id from the pending calls (and the send queue) and
// returns it, or nil when it was answered already.
func (r *Router) take(id uint64) *call {
	cl, _ := r.takeQueued(id)
	return cl
}

// takeQueued is take that also reports whether the call was still waiting
// for the send rate limit.
func (r *Router) takeQueued(id uint64) (*call, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	cl := r.pending[id]
	if cl == nil {
		return nil, false
	}
	delete(r.pending, id)
	cl.timer.Stop()
	queued := cl.queued
	r.sends.remove(cl)
	return cl, queued
}

func (r *Router) expire(id uint64) {
	cl, queued := r.takeQueued(id)
	if queued {
		r.release(cl)
		r.sends.timedOut(r, cl)
		return
	}
	if cl != nil {
		r.release(cl)
		r.timeouts.Log(r.log.With("caller", cl.caller.Stats().Name), "API call timed out (repeats are logged at debug until a response arrives)",
			fmt.Errorf("no response from the upstream within OBMUX_API_TIMEOUT=%s", r.timeout),
			"the upstream is slow or stuck; obmux_api_requests_total{outcome=\"timeout\"} counts every one")
		r.fail(cl.caller, cl.echo, onebot.RetcodeUpstreamTimeout, "upstream timeout", health.OutcomeTimeout)
	}
}

// fail delivers obmux's own failure response to c.
func (r *Router) fail(c Caller, echo []byte, retcode int, msg string, outcome health.Outcome) {
	c.Stats().M.API[outcome].Inc()
	c.Deliver(onebot.Failure(retcode, msg, echo))
}

// tagDigits is how many hex digits the tag of an echo has.
const tagDigits = 16

// echo returns obmux's echo for call id with tag: a JSON string.
func (r *Router) echo(id, tag uint64) []byte {
	e := make([]byte, 0, len(r.prefix)+20+1+tagDigits+1)
	e = strconv.AppendUint(append(e, r.prefix...), id, 10)
	e = append(e, ':')
	for shift := 64 - 4; shift >= 0; shift -= 4 {
		e = append(e, "0123456789abcdef"[tag>>shift&0xf])
	}
	return append(e, '"')
}

// parseEcho reads back an echo r made; ok is false for any other JSON value,
// including another spelling of one r made.
func (r *Router) parseEcho(e []byte) (id, tag uint64, ok bool) {
	if !bytes.HasPrefix(e, r.prefix) || len(e) < len(r.prefix)+2+tagDigits+1 || e[len(e)-1] != '"' {
		return 0, 0, false
	}
	ids, tags, found := bytes.Cut(e[len(r.prefix):len(e)-1], []byte{':'})
	if !found || len(tags) != tagDigits || len(ids) == 0 || ids[0] == '0' {
		return 0, 0, false
	}
	id, err := strconv.ParseUint(string(ids), 10, 64)
	if err != nil {
		return 0, 0, false
	}
	for _, c := range tags {
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		default:
			return 0, 0, false
		}
		tag = tag<<4 | uint64(d)
	}
	return id, tag, true
}
