package fanout

import (
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/onebot"
	"github.com/obmux/obmux/policy"
	"github.com/obmux/obmux/proxy"
	"github.com/obmux/obmux/wsconn"
)

// SlowPolicy says what happens to a peer whose backlog exceeds its bounds.
type SlowPolicy string

// Slow-peer policies.
const (
	// SlowDisconnect closes the peer (1008 "slow consumer"); a target then
	// reconnects and is replayed what it missed.
	SlowDisconnect SlowPolicy = "disconnect"
	// SlowDropOldest drops the oldest events of its backlog, counted.
	SlowDropOldest SlowPolicy = "drop_oldest"
)

// Config configures a Hub.
type Config struct {
	// QueueSize and QueueBytes bound each peer's backlog of live events.
	QueueSize  int
	QueueBytes int64
	Slow       SlowPolicy
	// ReplaySize and ReplayBytes bound the events kept for replay;
	// ReplayMaxAge is the age beyond which an event is never replayed.
	ReplaySize   int
	ReplayBytes  int64
	ReplayMaxAge time.Duration
	// HeartbeatInterval is each peer's OneBot heartbeat period (0: none).
	HeartbeatInterval time.Duration
	Conn              wsconn.Config
	Backoff           wsconn.Backoff
	UserAgent         string
	// Ingest extracts what the peers' policies read of each event, once
	// (policy.NewIngest of every target's and the forward clients'
	// Policy); nil when no policy looks into events.
	Ingest *policy.Ingest
	// Durable says the events come from a durable source that resumes
	// where the peers left off (the NATS edge): a target's first
	// connection is replayed every event the hub holds (they are what the
	// source had not seen delivered), and Delivered holds back until every
	// target has connected once, or for ReplayMaxAge.
	Durable bool
}

// StateSource is where the hub reads the upstream's state: the self_id it
// greets peers with and the status their heartbeats report, with a channel
// closed at its next change. A *proxy.UpstreamState is one.
type StateSource interface {
	State() (proxy.State, <-chan struct{})
}

// Hub fans the upstream's events out to every peer and routes their API
// calls. It implements proxy.Sink.
type Hub struct {
	cfg    Config
	up     StateSource
	router *proxy.Router
	mon    *health.Monitor
	log    *slog.Logger
	// handshakes bounds the targets' handshakes at once (MaxHandshakes).
	handshakes *wsconn.Handshakes

	mu      sync.Mutex
	ring    *ring
	cursors map[*cursor]struct{}
	list    atomic.Pointer[[]*cursor] // copy of cursors, read without mu
	closing bool
	peers   map[*peer]struct{}
	// accountFrom is the first seq of the current account's events: a
	// reconnecting target is never replayed another account's events.
	accountFrom uint64
	running     sync.WaitGroup
	formatErrs  health.FailureLog // events a bot's message format could not be made of
	// With Config.Durable: the targets that have not connected yet, and
	// when the hub was made.
	unseen  map[string]bool
	created time.Time
}

// MaxHandshakes is the most targets a Hub dials at once; the others wait
// their turn (each handshake takes about a millisecond on a LAN, so a
// thousand targets still connect within a second, and a target that
// never answers holds one of them for at most wsconn.HandshakeTimeout).
const MaxHandshakes = 16

// NewHub returns a Hub that reads the upstream's state from up and routes
// its peers' calls through router.
func NewHub(cfg Config, up StateSource, router *proxy.Router, mon *health.Monitor, log *slog.Logger) *Hub {
	h := &Hub{cfg: cfg, up: up, router: router, mon: mon, log: log, handshakes: wsconn.NewHandshakes(MaxHandshakes),
		// One ring serves both: a connected peer's backlog (at most
		// QueueSize/QueueBytes behind) and a reconnecting target's replay
		// (at most ReplaySize/ReplayBytes), so it holds the larger of each.
		ring:    newRing(max(cfg.ReplaySize, cfg.QueueSize), max(cfg.ReplayBytes, cfg.QueueBytes)),
		cursors: map[*cursor]struct{}{}, peers: map[*peer]struct{}{}, unseen: map[string]bool{}, created: time.Now()}
	h.list.Store(new([]*cursor))
	return h
}

// Next returns the sequence number the next event will get: right after
// Event, the number after that event's.
func (h *Hub) Next() uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ring.next
}

// Delivered returns the sequence number before which every connected peer
// has written (or was spared by its filters) every event, or Next when no
// peer is connected: what a durable source of events may acknowledge.
//
// It reports false while nothing may be acknowledged: the hub is closing
// (its peers are leaving and what they did not get must come again), or,
// with Config.Durable, a target has not connected yet in this process
// (for at most ReplayMaxAge: a bot that stays away must not stall the
// others).
func (h *Hub) Delivered() (uint64, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closing || len(h.unseen) > 0 && time.Since(h.created) < h.cfg.ReplayMaxAge {
		return 0, false
	}
	low := h.ring.next
	for c := range h.cursors {
		low = min(low, c.written.Load())
	}
	return low, true
}

// Event broadcasts one upstream event to every peer that takes events.
func (h *Hub) Event(b []byte) {
	ev := h.cfg.Ingest.Event(b) // once, for every peer, outside the lock
	if err := ev.Err(); err != nil {
		h.formatErrs.Log(h.log, "event passed in the upstream's message format: it cannot be converted", err,
			"a bot with OBMUX_*_MESSAGE_FORMAT=string gets this one as an array")
	}
	var slow []*cursor
	h.mu.Lock()
	seq := h.ring.push(b, ev, time.Now().UnixNano())
	// The published copy, not the map: no map iteration (and its random
	// start) per event; overflow publishes a new copy, not this one.
	for _, c := range *h.list.Load() {
		if h.overflow(c, seq+1) {
			slow = append(slow, c)
		}
	}
	h.mu.Unlock()
	for _, c := range *h.list.Load() {
		c.conn.Wake()
	}
	for _, c := range slow {
		h.log.Warn("slow consumer disconnected: its backlog exceeded the queue bounds", "role", c.stats.Role, "name", c.stats.Name,
			"queue_size", h.cfg.QueueSize, "queue_bytes", h.cfg.QueueBytes)
		c.conn.Close(wsconn.DisconnectSlowConsumer, nil)
	}
}

// overflow applies the slow policy to c when its live backlog exceeds the
// bounds, and reports whether c must be disconnected. h.mu held.
func (h *Hub) overflow(c *cursor, head uint64) bool {
	from := max(c.next, c.liveFrom)
	n := head - from
	// The newest event alone never counts against the byte bound: one event
	// larger than QueueBytes must not cut off every peer.
	if n <= uint64(h.cfg.QueueSize) && (n <= 1 || h.ring.bytesFrom(from) <= h.cfg.QueueBytes) {
		return false
	}
	if h.cfg.Slow == SlowDisconnect {
		delete(h.cursors, c)
		h.publish()
		return true
	}
	// Drop the oldest until both bounds hold again.
	to := from
	if head > uint64(h.cfg.QueueSize) {
		to = max(from, head-uint64(h.cfg.QueueSize))
	}
	for to < head-1 && h.ring.bytesFrom(to) > h.cfg.QueueBytes {
		to++
	}
	if c.next < to {
		c.stats.M.Dropped[health.DropOldest].Add(float64(to - c.next))
		c.next = to
	}
	return false
}

// publish refreshes the lock-free copy of the cursor set. h.mu held.
func (h *Hub) publish() {
	l := make([]*cursor, 0, len(h.cursors))
	for c := range h.cursors {
		l = append(l, c)
	}
	h.list.Store(&l)
}

// cursor is one peer's position in the ring: the wsconn.Source of its writer.
type cursor struct {
	hub      *Hub
	conn     *wsconn.Conn
	stats    *health.Stats
	check    *policy.Check // the peer's event checks; nil: every event
	next     uint64        // next seq to pull; h.mu
	liveFrom uint64        // first seq that was live when the peer connected
	written  atomic.Uint64 // seq after the last event written
	// The writer's: the seq of the last event the last Pull returned, and
	// the seq after the events that Pull consumed (the ones held back
	// after it included), so that writing it resumes past them.
	lastSeq, pulledTo uint64
	evs               []*policy.Event // Pull's scratch, beside dst
	// start is the seq the peer started from (its replay's first event);
	// replay the number of events replayed to it, counted once the
	// connection settles (countReplay).
	start, replay uint64
}

// countReplay counts and logs the replay of a connection that settled.
func (c *cursor) countReplay() {
	if c.replay > 0 {
		c.stats.M.Replayed.Add(float64(c.replay))
		c.hub.log.Info("replaying missed events", "name", c.stats.Name, "events", c.replay)
	}
}

// Pull implements wsconn.Source. The peer's checks run outside the hub's
// lock, on what was extracted from each event at ingest.
func (c *cursor) Pull(dst []wsconn.Item) []wsconn.Item {
	start := len(dst)
	for {
		end := c.take(&dst)
		if len(dst) == start || c.check == nil {
			return dst
		}
		kept := dst[:start]
		for i, it := range dst[start:] {
			if c.check.Pass(it.Frame, c.evs[i]) {
				var ok bool
				if it.Frame, ok = c.check.Frame(it.Frame, c.evs[i]); !ok { // in the peer's message format
					c.stats.M.Unconverted.Inc()
				}
				kept = append(kept, it)
			}
		}
		clear(dst[len(kept):])
		clear(c.evs)
		if n := len(dst) - len(kept); n > 0 {
			c.stats.M.Filtered.Add(float64(n))
		}
		dst = kept
		if len(dst) > start {
			c.lastSeq, c.pulledTo = dst[len(dst)-1].Seq, end
			return dst
		}
		// All held back: everything pulled before was written, so the
		// resume point passes them.
		c.written.Store(end)
	}
}

// take appends the events due next to dst (their Events to c.evs) and
// returns the seq after them.
func (c *cursor) take(dst *[]wsconn.Item) uint64 {
	h := c.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	r := h.ring
	if c.next < r.first {
		lost := r.first - c.next
		c.stats.M.Dropped[health.DropOldest].Add(float64(lost))
		c.next = r.first
	}
	c.evs = c.evs[:0]
	for c.next < r.next && len(*dst) < cap(*dst) {
		e := r.get(c.next)
		*dst = append(*dst, wsconn.Item{Seq: c.next, Frame: e.frame})
		c.evs = append(c.evs, e.ev)
		c.next++
	}
	return c.next
}

// Wrote implements wsconn.Source.
func (c *cursor) Wrote(seq uint64) {
	if seq == c.lastSeq && c.pulledTo > seq {
		c.written.Store(c.pulledTo)
		return
	}
	c.written.Store(seq + 1)
}

// attach adds a cursor for conn. resume is the seq after the last event
// written to this peer on an earlier connection (0: none, no replay).
func (h *Hub) attach(conn *wsconn.Conn, st *health.Stats, resume uint64, pol *policy.Policy) *cursor {
	h.mu.Lock()
	defer h.mu.Unlock()
	if st.Role == health.RoleTarget {
		delete(h.unseen, st.Name)
	}
	r := h.ring
	c := &cursor{hub: h, conn: conn, stats: st, next: r.next, liveFrom: r.next, check: h.cfg.Ingest.Check(pol)}
	if resume != 0 && resume < h.accountFrom {
		resume = h.accountFrom // the events before belong to the old account
	}
	maxAge := h.cfg.ReplayMaxAge
	if pol != nil && pol.ReplayMaxAge != nil {
		maxAge = *pol.ReplayMaxAge // 0: this peer is never replayed, by choice
	}
	if resume != 0 && resume < r.next && maxAge > 0 {
		from, lost := resume, uint64(0)
		if from < r.first {
			lost, from = r.first-from, r.first
		}
		kept := from // lost from here on count only what the peer's checks pass
		oldest := time.Now().Add(-maxAge).UnixNano()
		for from < r.next && r.get(from).at < oldest {
			from++
			lost++
		}
		// Replay at most ReplaySize events and ReplayBytes bytes (the ring
		// may hold more, for live backlogs); either 0 turns replay off.
		if n := r.next - from; n > uint64(h.cfg.ReplaySize) {
			lost += n - uint64(h.cfg.ReplaySize)
			from = r.next - uint64(h.cfg.ReplaySize)
		}
		for from < r.next && (h.cfg.ReplayBytes == 0 || r.bytesFrom(from) > h.cfg.ReplayBytes) {
			from++
			lost++
		}
		c.next = from
		if c.check != nil {
			lost -= (from - kept) - h.passing(c.check, kept, from)
		}
		if lost > 0 {
			st.M.ReplayLost.Add(float64(lost))
			h.log.Warn("events missed while away are no longer kept for replay", "name", st.Name, "lost", lost)
		}
		c.replay = h.passing(c.check, from, r.next) // counted when the connection settles
	}
	c.start = c.next
	// Until it writes something, this connection resumes, next time, from
	// where it started: the replay (if cut short) is not skipped, and a
	// first connection gets its own resume point.
	c.written.Store(c.next)
	h.cursors[c] = struct{}{}
	h.publish()
	return c
}

// passing counts the events in [from, to) that check lets through (for
// replay's counts, once a reconnect). h.mu held.
func (h *Hub) passing(check *policy.Check, from, to uint64) uint64 {
	if check == nil {
		return to - from
	}
	n := uint64(0)
	for s := from; s < to; s++ {
		if e := h.ring.get(s); check.Pass(e.frame, e.ev) {
			n++
		}
	}
	return n
}

// detach removes c and returns the seq after the last event written through
// it. Unless the peer is replayed (a target), the events it will never get (in
// the ring after that seq, and passing its checks) are counted as dropped,
// disconnected.
func (h *Hub) detach(c *cursor, replayed bool) uint64 {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.cursors, c)
	h.publish()
	written := c.written.Load()
	if !replayed {
		if n := h.passing(c.check, max(written, h.ring.first), h.ring.next); n > 0 {
			c.stats.M.Dropped[health.DropDisconnected].Add(float64(n))
		}
	}
	return written
}

// peer is one downstream connection, as a Caller of the router.
type peer struct {
	hub    *Hub
	conn   *wsconn.Conn
	api    bool           // may call the API
	selfID int64          // the self_id the peer was greeted with
	policy *policy.Policy // what it gets and may do; never nil

	badFrames health.DropLog // frames answered with 1400, logged once per reason
}

func (p *peer) Deliver(b []byte)      { p.conn.Send(b, onebot.KindAPIResponse) }
func (p *peer) Stats() *health.Stats  { return p.conn.Stats() }
func (p *peer) Gone() <-chan struct{} { return p.conn.Done() }
func (p *peer) Hold(on bool)          { p.conn.Hold(on) }

func (p *peer) MessageFormat() onebot.MessageFormat { return p.policy.MessageFormat }

// handle is a peer's reader Handler: API calls go to the router, anything
// else is answered with a 1400 failure.
func (p *peer) handle(b []byte) onebot.Kind {
	f, kind, err := onebot.Classify(b)
	switch {
	case kind == onebot.KindAPIRequest && p.api:
		if action := onebot.BaseAction(b, f); !p.policy.API.Permits(action) {
			p.hub.router.Forbid(p, b, f, action)
		} else {
			p.hub.router.Request(p, b, f)
		}
		return kind
	case kind == onebot.KindAPIRequest:
		p.hub.router.Reject(p, b, f, "this endpoint serves events only: call the API on / or /api")
	case err != nil:
		p.hub.router.Reject(p, b, f, "bad request: "+err.Error())
		kind = onebot.KindInvalid
	default:
		p.hub.router.Reject(p, b, f, "not an API request (no \"action\")")
	}
	d := health.InvalidDrop(err)
	p.conn.Stats().M.Dropped[d].Inc()
	p.badFrames.Log(p.hub.log, d, "frame from a peer answered with 1400", "role", p.Stats().Role, "name", p.Stats().Name, "error", err, "kind", kind.String())
	return kind
}

// serveOpts says what a peer connection gets.
type serveOpts struct {
	events, api, heartbeat bool
	// replayed is set for a target: the events not written to it are
	// offered again when it reconnects (else they count as dropped).
	replayed bool
	selfID   int64
	resume   uint64
	policy   *policy.Policy // nil: the zero Policy
	// settled, if not nil, is called once the connection has lasted
	// wsconn.RefusedWithin, or when it ends sooner without being refused
	// (wsconn.Served.Refused); its replay is counted then too.
	settled func()
}

// serve runs one peer connection until it ends and returns how it ended and
// the resume point for replay. It refuses (returns at once) while the hub is
// closing.
func (h *Hub) serve(ctx context.Context, ws *websocket.Conn, raw io.Closer, st *health.Stats, o serveOpts) (wsconn.Served, uint64) {
	conn := wsconn.New(ws, raw, st, h.log.With("role", st.Role, "name", st.Name), h.cfg.Conn)
	if o.policy == nil {
		o.policy = &policy.Policy{}
	}
	p := &peer{hub: h, conn: conn, api: o.api, selfID: o.selfID, policy: o.policy}
	conn.SetGreeting(onebot.Lifecycle(time.Now(), o.selfID, onebot.LifecycleConnect))
	if o.heartbeat && h.cfg.HeartbeatInterval > 0 {
		conn.SetHeartbeat(h.cfg.HeartbeatInterval, func() []byte {
			s, _ := h.up.State()
			return onebot.Heartbeat(time.Now(), o.selfID, s.Status, h.cfg.HeartbeatInterval)
		})
	}
	h.mu.Lock()
	if h.closing {
		h.mu.Unlock()
		ws.CloseNow() // shutting down: no time to wait for a handshake
		return wsconn.Served{Reason: health.ReasonShutdown}, o.resume
	}
	h.peers[p] = struct{}{}
	h.running.Add(1)
	h.mu.Unlock()
	defer h.running.Done()
	// A change that came before p was registered did not see it.
	if s, _ := h.up.State(); s.SelfID != 0 && s.SelfID != o.selfID {
		p.closeStale(s.SelfID)
	}

	var c *cursor
	if o.events {
		c = h.attach(conn, st, o.resume, o.policy)
		conn.SetSource(c)
	}
	var once sync.Once
	settle := func() {
		if o.settled != nil {
			o.settled()
		}
		if c != nil {
			c.countReplay()
		}
	}
	start := time.Now()
	timer := time.AfterFunc(wsconn.RefusedWithin, func() { once.Do(settle) })
	reason, err := conn.Run(ctx, p.handle)
	end := wsconn.Served{Reason: reason, Err: err, Lasted: time.Since(start)}
	early := timer.Stop()
	resume := o.resume
	if c != nil {
		resume = h.detach(c, o.replayed)
	}
	switch {
	case early && end.Refused():
		// Turned down at once: a failed dial, which delivered nothing. The
		// next connection starts where this one did (no replay if this
		// was the first).
		if o.resume != 0 && c != nil {
			resume = c.start
		}
	case early:
		once.Do(settle)
	}
	h.router.Forget(p)
	h.mu.Lock()
	delete(h.peers, p)
	h.mu.Unlock()
	return end, resume
}

// Close ends every peer gracefully: lifecycle disable, then close 1001
// "obmux shutting down", and refuses new ones. It waits for the close
// handshakes until ctx is done, then cuts the rest.
func (h *Hub) Close(ctx context.Context) {
	h.mu.Lock()
	h.closing = true
	peers := make([]*peer, 0, len(h.peers))
	for p := range h.peers {
		peers = append(peers, p)
	}
	h.mu.Unlock()
	for _, p := range peers {
		p.conn.Close(wsconn.DisconnectShutdown, onebot.Lifecycle(time.Now(), p.selfID, onebot.LifecycleDisable))
	}
	done := make(chan struct{})
	go func() { h.running.Wait(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		for _, p := range peers {
			p.conn.Abort(wsconn.DisconnectShutdown, ctx.Err())
		}
		<-done
	}
}

// Closing reports whether Close has been called.
func (h *Hub) Closing() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.closing
}

// SelfIDChanged implements proxy.Sink: every peer greeted with another
// self_id is ended gracefully (lifecycle disable for its self_id, close 1000
// "self_id changed"): a OneBot connection serves one account. A target
// redials and a client reconnects, and each is greeted with the new one.
func (h *Hub) SelfIDChanged(id int64) {
	h.mu.Lock()
	h.accountFrom = h.ring.next
	var stale []*peer
	for p := range h.peers {
		if p.selfID != id {
			stale = append(stale, p)
		}
	}
	h.mu.Unlock()
	for _, p := range stale {
		p.closeStale(id)
	}
}

// closeStale ends p, greeted with a self_id that is no longer the upstream's.
func (p *peer) closeStale(now int64) {
	st := p.conn.Stats()
	p.hub.log.Info("connection closed: the upstream's self_id changed", "role", string(st.Role), "name", st.Name,
		"self_id", now, "was", p.selfID)
	p.conn.Close(wsconn.DisconnectSelfIDChanged, onebot.Lifecycle(time.Now(), p.selfID, onebot.LifecycleDisable))
}
