package natsbus

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
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
	// has every event.
	Delivered() uint64
	// Closing reports whether the hub is shutting down: its peers are
	// leaving, and what they did not get must not be acknowledged.
	Closing() bool
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
	marks   []mark // events handed to the hub and not yet acknowledged
	lastSeq uint64 // stream sequence of the last message taken (consume goroutine)

	calls  sync.WaitGroup // API requests in flight
	stopCh chan struct{}  // closed by Close: API requests give up
	once   sync.Once
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

// Run consumes the stream until ctx is done.
func (e *Edge) Run(ctx context.Context) {
	e.router.Attach(e.send)
	defer e.router.Attach(nil)
	var fails health.FailureLog
	for {
		cc, err := e.consume(ctx)
		if err == nil {
			fails.Reset()
			e.serve(ctx, cc)
			cc.Stop()
			e.setOnline(false, nil)
			return
		}
		e.stats.Failed(err)
		fails.Log(e.log, "NATS stream not readable; retrying", err,
			"is the account side's obmux running with OBMUX_NATS_URL and the same OBMUX_NATS_STREAM?")
		select {
		case <-ctx.Done():
			return
		case <-time.After(e.cfg.Retry):
		}
	}
}

// serve acknowledges what the peers have and follows the connection's
// state until ctx is done.
func (e *Edge) serve(ctx context.Context, cc jetstream.ConsumeContext) {
	tick := time.NewTicker(e.cfg.AckEvery)
	defer tick.Stop()
	for {
		e.setOnline(e.nc.IsConnected(), nil)
		e.ack()
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
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
	}
	c, err := s.CreateConsumer(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("create consumer %s: %w", e.cfg.Consumer, err)
	}
	if cfg.OptStartSeq > 0 {
		e.log.Info("resuming the stream where this edge's peers left off", "consumer", e.cfg.Consumer, "from_seq", cfg.OptStartSeq)
	}
	return c.Consume(e.take)
}

// take is the consumer's handler: one message, in stream order.
func (e *Edge) take(msg jetstream.Msg) {
	md, err := msg.Metadata()
	if err != nil {
		return
	}
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
	e.mu.Lock()
	e.marks = append(e.marks, m)
	e.mu.Unlock()
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

// ack acknowledges (AckAll) the newest message every connected peer has.
func (e *Edge) ack() {
	if e.hub.Closing() {
		return
	}
	low := e.hub.Delivered()
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
	if last != nil {
		_ = last.Ack()
	}
}

// send is the router's way to the account side: the call becomes a NATS
// request; its reply is routed like an upstream's response.
func (e *Edge) send(frame []byte) error {
	select {
	case <-e.stopCh:
		return errors.New("obmux is shutting down")
	default:
	}
	if !e.nc.IsConnected() {
		return errors.New("NATS not connected")
	}
	msg := nats.NewMsg(APISubject(e.cfg.SelfID))
	msg.Data = frame
	msg.Header.Set(CallerHeader, e.cfg.Consumer)
	e.calls.Go(func() { e.request(msg) })
	return nil
}

// CallerHeader names the edge that makes an API call over NATS.
const CallerHeader = "Obmux-Caller"

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
	if err != nil {
		if errors.Is(err, nats.ErrNoResponders) {
			e.router.Undelivered(msg.Data, "no account side answers on "+msg.Subject+" (is its obmux running with OBMUX_NATS_URL?)")
		}
		return // a timeout is the router's own 1504
	}
	if f, err := onebot.Scan(reply.Data); err == nil {
		e.router.Response(reply.Data, f)
	}
}

// Close stops the API requests in flight; Run returns when its context is
// done.
func (e *Edge) Close(context.Context) {
	e.once.Do(func() { close(e.stopCh) })
	e.calls.Wait()
}
