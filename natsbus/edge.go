package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/onebot"
	"github.com/obmux/obmux/proxy"
)

// EdgeConfig configures an Edge.
type EdgeConfig struct {
	// Stream is the account side's stream; Consumer the durable consumer
	// this edge reads it through (one edge per name).
	Stream, Consumer string
	// SelfID is the account whose events this edge serves.
	SelfID int64
	// APITimeout bounds a NATS request for an API call.
	APITimeout time.Duration
	// MaxAckPending bounds the events handed to the hub and not yet
	// written to every connected peer; past it the consumer pauses.
	MaxAckPending int
	// AckEvery is how often the written events are acknowledged (and the
	// NATS connection's state is looked at).
	AckEvery time.Duration
	// Retry is the pause after a failure to set up the consumer.
	Retry time.Duration
	// Account, if not nil, is told the account's state from its status
	// messages.
	Account *health.Account
}

// Delivery is the fan-out hub as an edge sees it.
type Delivery interface {
	proxy.Sink
	// Next is the sequence number the next event will get.
	Next() uint64
	// Delivered is the sequence number before which every connected peer
	// has every event; false while nothing may be acknowledged.
	Delivered() (uint64, bool)
}

// Edge is the upstream of an obmux that takes its account's events from
// the stream rather than from a OneBot implementation: it hands them to the
// hub in stream order, acknowledges them once every connected peer has
// them (so that an edge killed and started again gives its peers every
// event since, at the cost of repeating those in flight at the kill), and
// makes the peers' API calls NATS requests to the account side.
type Edge struct {
	cfg    EdgeConfig
	nc     *nats.Conn
	js     jetstream.JetStream
	router *proxy.Router
	hub    Delivery
	state  *proxy.UpstreamState // what the hub reads
	stats  *health.Stats
	log    *slog.Logger

	mu      sync.Mutex
	gen     uint64 // counts the consumers set up; a replaced one's messages are ignored
	marks   []mark // events handed to the hub and not yet acknowledged
	lastSeq uint64 // stream sequence of the last message taken
	// delivered is the consumer sequence of the last delivery (0: none
	// yet from this consumer); gap is set when one was skipped.
	delivered uint64
	gap       atomic.Bool

	callsMu sync.Mutex     // orders calls.Go after Close's stopped
	stopped bool           // Close was called: no new API requests
	calls   sync.WaitGroup // API requests in flight
	stopCh  chan struct{}  // closed by Close: API requests give up
}

// mark is a message taken and the hub sequence number after it (0: nothing
// for the peers to write, a status message).
type mark struct {
	next uint64
	msg  jetstream.Msg
}

// NewEdge returns an Edge on nc for cfg.SelfID that writes the upstream's
// state (online while it consumes on a connected NATS; good as the account
// side's last status message says) to state; Run starts it.
func NewEdge(nc *nats.Conn, cfg EdgeConfig, state *proxy.UpstreamState, router *proxy.Router, hub Delivery,
	mon *health.Monitor, log *slog.Logger) (*Edge, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	e := &Edge{cfg: cfg, nc: nc, js: js, router: router, hub: hub, state: state, log: log,
		stats: mon.Track(health.RoleUpstream, "upstream"), stopCh: make(chan struct{})}
	state.Update(func(s *proxy.State) { s.SelfID, s.Status = cfg.SelfID, onebot.Status{Good: true} })
	cfg.Account.SetSelfID(cfg.SelfID)
	return e, nil
}

// Ready reports whether the edge takes events now (the readiness probe).
func (e *Edge) Ready() bool {
	s, _ := e.state.State()
	return s.Online
}

// Run consumes the stream until ctx is done. The consumer is set up again
// at its acknowledged position whenever what it delivers can no longer be
// trusted to be whole: NATS reconnected (messages sent into the old
// connection are lost to it), a delivery was skipped, or the consumer was
// deleted.
func (e *Edge) Run(ctx context.Context) {
	e.router.Attach(e.send)
	defer e.router.Attach(nil)
	var fails health.FailureLog
	for ctx.Err() == nil {
		cc, err := e.consume(ctx)
		if err == nil {
			fails.Reset()
			why := e.serve(ctx, cc)
			cc.Stop()
			e.restart()
			if why != "" {
				e.log.Warn("consuming the stream again from the acknowledged position", "why", why)
			}
			continue
		}
		e.setOnline(false, err)
		e.stats.Failed(err)
		fails.Log(e.log, "NATS stream not readable; retrying", err,
			"is the account side's obmux running with OBMUX_NATS_URL and the same OBMUX_NATS_STREAM?")
		select {
		case <-ctx.Done():
		case <-time.After(e.cfg.Retry):
		}
	}
	e.setOnline(false, nil)
}

// serve acknowledges what the peers have and follows the connection's
// state until ctx is done ("") or the consumer must be set up again (why).
func (e *Edge) serve(ctx context.Context, cc jetstream.ConsumeContext) string {
	tick := time.NewTicker(e.cfg.AckEvery)
	defer tick.Stop()
	reconnects := e.nc.Stats().Reconnects
	for {
		e.setOnline(e.nc.IsConnected(), nil)
		switch {
		case e.nc.Stats().Reconnects != reconnects:
			return "NATS reconnected"
		case e.gap.Load():
			return "a delivery was skipped"
		}
		e.ack()
		select {
		case <-ctx.Done():
			return ""
		case <-cc.Closed():
			return "the consumer stopped (deleted, or another edge took its name)"
		case <-tick.C:
		}
	}
}

// restart forgets the deliveries of a consumer that is being replaced: its
// messages can no longer be acknowledged; the new one delivers again from
// the acknowledged position, and what the hub has already is skipped.
func (e *Edge) restart() {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.gen++
	clear(e.marks)
	e.marks = e.marks[:0]
	e.delivered = 0
	e.gap.Store(false)
}

func (e *Edge) setOnline(on bool, err error) {
	if e.Ready() == on {
		return
	}
	e.state.Update(func(s *proxy.State) { s.Online = on })
	e.cfg.Account.Connected(on)
	if on {
		e.stats.Up()
		e.log.Info("taking events from NATS", "stream", e.cfg.Stream, "consumer", e.cfg.Consumer)
	} else {
		e.stats.Down(health.ReasonShutdown, err)
	}
}

// consume (re)creates the durable consumer at its acknowledged position and
// starts taking messages: whatever the previous run of this edge took but
// had not acknowledged is delivered again, in order.
func (e *Edge) consume(ctx context.Context) (jetstream.ConsumeContext, error) {
	s, err := e.js.Stream(ctx, e.cfg.Stream)
	if err != nil {
		return nil, fmt.Errorf("stream %s: %w", e.cfg.Stream, err)
	}
	cfg := jetstream.ConsumerConfig{Durable: e.cfg.Consumer, AckPolicy: jetstream.AckAllPolicy, AckWait: time.Hour,
		MaxAckPending: e.cfg.MaxAckPending, DeliverPolicy: jetstream.DeliverNewPolicy,
		FilterSubjects: []string{fmt.Sprintf("%s.%d.%s.>", root, e.cfg.SelfID, eventToken), StatusSubject(e.cfg.SelfID)}}
	if c, err := s.Consumer(ctx, e.cfg.Consumer); err == nil {
		info, err := c.Info(ctx)
		if err != nil {
			return nil, fmt.Errorf("consumer %s: %w", e.cfg.Consumer, err)
		}
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, info.AckFloor.Stream+1
		if err := s.DeleteConsumer(ctx, e.cfg.Consumer); err != nil {
			return nil, fmt.Errorf("reset consumer %s: %w", e.cfg.Consumer, err)
		}
	} else if !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return nil, fmt.Errorf("consumer %s: %w", e.cfg.Consumer, err)
	} else if last := e.taken(); last > 0 {
		// Deleted under a running edge: go on after what the hub has.
		cfg.DeliverPolicy, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, last+1
	}
	c, err := s.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", e.cfg.Consumer, err)
	}
	if cfg.OptStartSeq > 0 {
		e.log.Info("resuming the stream where this edge's peers left off", "consumer", e.cfg.Consumer, "from_seq", cfg.OptStartSeq)
	}
	e.mu.Lock()
	gen := e.gen
	e.mu.Unlock()
	return c.Consume(func(msg jetstream.Msg) { e.take(gen, msg) })
}

// taken is the stream sequence of the last message handed to the hub (0:
// none in this process).
func (e *Edge) taken() uint64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.lastSeq
}

// take is the consumer's handler: one message, in stream order.
func (e *Edge) take(gen uint64, msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		return
	}
	// Under e.mu, so that a consumer being replaced (whose handler may
	// still run after Stop) cannot interleave with its successor.
	e.mu.Lock()
	defer e.mu.Unlock()
	if gen != e.gen || e.gap.Load() {
		return // a consumer replaced, or about to be
	}
	if e.delivered != 0 && md.Sequence.Consumer != e.delivered+1 {
		// A delivery never arrived (sent into a connection that died):
		// acknowledging past it would lose it.
		e.gap.Store(true)
		return
	}
	e.delivered = md.Sequence.Consumer
	if md.Sequence.Stream <= e.lastSeq {
		return // delivered again; the hub has it
	}
	e.lastSeq = md.Sequence.Stream
	m := mark{msg: msg}
	if msg.Subject() == StatusSubject(e.cfg.SelfID) {
		e.status(msg.Data())
	} else {
		e.hub.Event(msg.Data())
		m.next = e.hub.Next()
	}
	e.marks = append(e.marks, m)
}

// status applies the account side's status message.
func (e *Edge) status(b []byte) {
	var st struct {
		Online, Good bool
		Reason       string
	}
	if json.Unmarshal(b, &st) != nil {
		return
	}
	e.state.Update(func(s *proxy.State) { s.Status.Good = st.Online && st.Good })
	if st.Online {
		e.cfg.Account.Heartbeat(true, st.Good)
	} else {
		e.cfg.Account.Event(false, "account side: "+st.Reason)
	}
}

// Settle acknowledges what every peer has, and waits until JetStream
// confirmed it (or ctx is done): at shutdown, before the peers leave, so
// that a restart does not repeat what they got.
func (e *Edge) Settle(ctx context.Context) {
	if last := e.ackable(); last != nil {
		_ = last.DoubleAck(ctx)
	}
}

// ack acknowledges (AckAll) the newest message every connected peer has.
func (e *Edge) ack() {
	if last := e.ackable(); last != nil {
		_ = last.Ack()
	}
}

// ackable takes the marks every connected peer has and returns the newest
// of their messages (nil: none), which acknowledges them all.
func (e *Edge) ackable() jetstream.Msg {
	low, ok := e.hub.Delivered()
	if !ok {
		return nil
	}
	e.mu.Lock()
	i := 0
	for i < len(e.marks) && e.marks[i].next <= low {
		i++
	}
	var last jetstream.Msg
	if i > 0 {
		last = e.marks[i-1].msg
		clear(e.marks[:i])
		e.marks = e.marks[i:]
	}
	e.mu.Unlock()
	return last
}

// send is the router's way to the account side: the call becomes a NATS
// request; its reply is routed like an upstream's response.
func (e *Edge) send(frame []byte) error {
	if !e.nc.IsConnected() {
		return errors.New("NATS not connected")
	}
	msg := nats.NewMsg(APISubject(e.cfg.SelfID))
	msg.Data = frame
	msg.Header.Set(CallerHeader, e.cfg.Consumer)
	e.callsMu.Lock()
	defer e.callsMu.Unlock()
	if e.stopped {
		return errors.New("obmux is shutting down")
	}
	e.calls.Go(func() { e.request(msg) })
	return nil
}

func (e *Edge) request(msg *nats.Msg) {
	ctx, cancel := context.WithTimeout(context.Background(), e.cfg.APITimeout)
	defer cancel()
	go func() {
		select {
		case <-e.stopCh:
			cancel()
		case <-ctx.Done():
		}
	}()
	reply, err := e.nc.RequestMsgWithContext(ctx, msg)
	switch {
	case errors.Is(err, nats.ErrNoResponders):
		e.router.Undelivered(msg.Data, "no account side answers on "+msg.Subject+" (is its obmux running with OBMUX_NATS_URL?)")
		return
	case errors.Is(err, context.DeadlineExceeded):
		return // the router's own 1504 answers it
	case err != nil:
		e.router.Undelivered(msg.Data, "NATS request to the account side failed: "+err.Error())
		return
	}
	if f, err := onebot.Scan(reply.Data); err == nil {
		e.router.Response(reply.Data, f)
	}
}

// Close stops the API requests in flight; Run returns when its context is
// done.
func (e *Edge) Close(context.Context) {
	e.callsMu.Lock()
	if !e.stopped {
		e.stopped = true
		close(e.stopCh)
	}
	e.callsMu.Unlock()
	e.calls.Wait()
}
