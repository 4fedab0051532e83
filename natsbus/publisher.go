package natsbus

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/obmux/obmux/health"
)

// PublisherConfig configures a Publisher.
type PublisherConfig struct {
	// Stream is the JetStream stream the events go to; it is created with
	// MaxAge and MaxBytes when missing, and used as it is when it exists.
	Stream   string
	MaxAge   time.Duration
	MaxBytes int64
	// BufferBytes and BufferEvents bound the events not yet acknowledged.
	BufferBytes  int64
	BufferEvents int
	// MaxInflight bounds the publishes awaiting their acknowledgement.
	MaxInflight int
	// AckTimeout is how long a publish waits for its acknowledgement before
	// it is published again.
	AckTimeout time.Duration
	// Retry is the pause after a failure before publishing again.
	Retry time.Duration
	// Account, if not nil, gives the self_id for frames without one and
	// the online changes published on onebot.<self_id>.status.
	Account *health.Account
}

// duplicateWindow is the stream's deduplication window for streams obmux
// creates: a re-publish within it, after a reconnect, stores nothing new.
const duplicateWindow = 2 * time.Minute

// Publisher publishes upstream events to JetStream, in order, without ever
// blocking the caller. Create it with NewPublisher; Event may be called from
// any goroutine; Run does the publishing until its context is done.
type Publisher struct {
	cfg  PublisherConfig
	nc   *nats.Conn
	js   jetstream.JetStream
	log  *slog.Logger
	m    *Metrics
	boot string // random per process: message ids never repeat across restarts

	selfID      atomic.Int64
	wake        chan struct{}
	largeWarned atomic.Bool // the first too-large event is logged at warn, the others at debug

	statusMu   sync.Mutex
	statusSent bool // an online state was published
	lastUp     bool // the last one published

	mu       sync.Mutex
	buf      []entry // oldest first
	bytes    int64
	seq      uint64
	overflow bool          // the buffer refused an event since it last had room
	empty    chan struct{} // closed when the buffer is next empty; nil: none asked
}

// entry is one event waiting for its acknowledgement. Its subject is made
// when it is first published, on the publisher's goroutine, so that the
// upstream's reader only appends it.
type entry struct {
	seq     uint64 // its message id is boot-seq
	subject string // "" until first published
	data    []byte
	at      time.Time
}

// NewPublisher returns a Publisher on nc and registers its buffer gauges.
func NewPublisher(nc *nats.Conn, cfg PublisherConfig, m *Metrics, reg prometheus.Registerer, log *slog.Logger) (*Publisher, error) {
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(cfg.MaxInflight),
		jetstream.WithPublishAsyncTimeout(cfg.AckTimeout))
	if err != nil {
		return nil, fmt.Errorf("JetStream: %w", err)
	}
	var b [6]byte
	_, _ = rand.Read(b[:])
	p := &Publisher{cfg: cfg, nc: nc, js: js, log: log, m: m, boot: hex.EncodeToString(b[:]), wake: make(chan struct{}, 1)}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "obmux_nats_buffer_events",
			Help: "Events waiting to be acknowledged by JetStream."}, func() float64 { n, _, _ := p.Buffered(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "obmux_nats_buffer_bytes",
			Help: "Bytes of the events waiting to be acknowledged, bounded by OBMUX_NATS_BUFFER_BYTES."},
			func() float64 { _, n, _ := p.Buffered(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "obmux_nats_lag_seconds",
			Help: "Age of the oldest event not yet acknowledged by JetStream (0: none waits)."},
			func() float64 { _, _, lag := p.Buffered(); return lag.Seconds() }))
	return p, nil
}

// Buffered reports the events waiting for their acknowledgement, their
// bytes and the age of the oldest.
func (p *Publisher) Buffered() (events int, bytes int64, lag time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) > 0 {
		lag = time.Since(p.buf[0].at)
	}
	return len(p.buf), p.bytes, lag
}

// Event queues an upstream event frame for publishing (a meta event is
// skipped when its turn comes). It never blocks and does not read b: b is
// kept until JetStream acknowledged it and must not change.
func (p *Publisher) Event(b []byte) { p.add("", b) }

// status queues the account's state on its status subject.
func (p *Publisher) status(st health.AccountState) {
	b, _ := json.Marshal(struct {
		SelfID int64  `json:"self_id"`
		Online bool   `json:"online"`
		Good   bool   `json:"good"`
		Reason string `json:"reason,omitempty"`
		Time   int64  `json:"time"`
	}{st.SelfID, st.Up(), st.Good, st.Reason, time.Now().Unix()})
	p.add(StatusSubject(st.SelfID), b)
}

func (p *Publisher) add(subject string, b []byte) {
	p.mu.Lock()
	full := len(p.buf) >= p.cfg.BufferEvents || p.bytes+int64(len(b)) > p.cfg.BufferBytes
	if full {
		first := !p.overflow
		p.overflow = true
		p.mu.Unlock()
		p.m.droppedFull.Inc()
		if first {
			p.log.Warn("NATS buffer full: events are not published until JetStream acknowledges the waiting ones",
				"events", p.cfg.BufferEvents, "bytes", p.cfg.BufferBytes)
		}
		return
	}
	p.overflow = false
	p.seq++
	p.buf = append(p.buf, entry{seq: p.seq, subject: subject, data: b, at: time.Now()})
	p.bytes += int64(len(b))
	p.mu.Unlock()
	select {
	case p.wake <- struct{}{}:
	default:
	}
}

// Run makes sure the stream exists, then publishes until ctx is done; when
// the stream goes away (deleted, or NATS came back with an empty store) it
// is made again before publishing goes on.
func (p *Publisher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	if p.cfg.Account != nil {
		wg.Go(func() { p.watchAccount(ctx) })
	}
	var fails health.FailureLog
	for ctx.Err() == nil {
		err := EnsureStream(ctx, p.js, p.cfg)
		if err == nil {
			fails.Reset()
			p.publishLoop(ctx)
			continue
		}
		fails.Log(p.log, "NATS stream not ready; events wait in the buffer", err,
			"check OBMUX_NATS_URL and that the server runs with JetStream enabled (nats-server -js)")
		sleep(ctx, p.cfg.Retry)
	}
}

// publishLoop keeps up to MaxInflight publishes awaiting acknowledgement
// and takes the acknowledgements in order. On a failure every publish not
// acknowledged is sent again with its message id: JetStream stores each
// id once, so the events stay in order without duplicates. It returns when
// ctx is done or the stream is gone.
func (p *Publisher) publishLoop(ctx context.Context) {
	var futures []jetstream.PubAckFuture // for buf[:len(futures)]
	var fails health.FailureLog
	for {
		var err error
		futures, err = p.fill(futures)
		if err == nil && len(futures) == 0 {
			select {
			case <-p.wake:
				continue
			case <-ctx.Done():
				return
			}
		}
		if err == nil {
			select {
			case <-futures[0].Ok():
				p.acked()
				futures = futures[1:]
				fails.Reset()
				continue
			case err = <-futures[0].Err():
			case <-ctx.Done():
				return
			}
		}
		p.m.errors.Inc()
		futures = futures[:0]
		switch publishFailure(err) {
		case failRejected:
			p.rejected(err) // the oldest can never be stored: drop it, go on
			continue
		case failStreamGone:
			fails.Log(p.log, "NATS stream gone; making it again", err, "")
			return
		}
		fails.Log(p.log, "NATS publish failed; publishing again", err, "")
		if !sleep(ctx, p.cfg.Retry) {
			return
		}
	}
}

// What a failed publish means for the events waiting.
const (
	failRetry      = iota // NATS away or slow: publish them again
	failRejected          // the stream refuses the oldest for good
	failStreamGone        // no stream takes them: make it again
)

func publishFailure(err error) int {
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum:
		return failRejected
	case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamNotFound,
		errors.Is(err, jetstream.ErrNoStreamResponse), errors.Is(err, jetstream.ErrStreamNotFound):
		return failStreamGone
	}
	return failRetry
}

// fill publishes the buffered events that have no publish in flight, up to
// MaxInflight in flight.
func (p *Publisher) fill(futures []jetstream.PubAckFuture) ([]jetstream.PubAckFuture, error) {
	for len(futures) < p.cfg.MaxInflight {
		p.mu.Lock()
		if len(futures) >= len(p.buf) {
			p.mu.Unlock()
			break
		}
		i := len(futures)
		e := p.buf[i]
		p.mu.Unlock()
		if e.subject == "" {
			subject, ok := EventSubject(p.selfID.Load(), e.data)
			if !ok {
				if i > 0 {
					break // skipped once it is the oldest, so that order holds
				}
				p.pop() // a meta event: not published
				continue
			}
			e.subject = subject
			p.mu.Lock()
			p.buf[i].subject = subject // kept for a publish again
			p.mu.Unlock()
		}
		if limit := p.nc.MaxPayload(); limit > 0 && int64(len(e.data)) > limit {
			if i > 0 {
				break // dropped once it is the oldest, so that order holds
			}
			p.tooLarge(e, limit, nil)
			continue
		}
		msg := &nats.Msg{Subject: e.subject, Data: e.data, Header: nats.Header{}}
		id := p.boot + "-" + strconv.FormatUint(e.seq, 10)
		f, err := p.js.PublishMsgAsync(msg, jetstream.WithMsgID(id), jetstream.WithExpectStream(p.cfg.Stream))
		if err != nil {
			return futures, err
		}
		futures = append(futures, f)
	}
	return futures, nil
}

// rejected drops the oldest event, which the stream refused for good (its
// max_msg_size), counted as too_large.
func (p *Publisher) rejected(err error) {
	p.mu.Lock()
	var e entry
	if len(p.buf) > 0 {
		e = p.buf[0]
	}
	p.mu.Unlock()
	if e.data != nil {
		p.tooLarge(e, -1, err)
	}
}

// tooLarge drops the oldest event, e, which the server (max_payload limit)
// or the stream (err) refuses.
func (p *Publisher) tooLarge(e entry, limit int64, err error) {
	p.m.droppedLarge.Inc()
	level := slog.LevelWarn
	if p.largeWarned.Swap(true) {
		level = slog.LevelDebug
	}
	if err == nil {
		p.log.Log(context.Background(), level, "event not published to NATS: larger than the server's max_payload (raise max_payload in nats-server's config)",
			"subject", e.subject, "bytes", len(e.data), "max_payload", limit)
	} else {
		p.log.Log(context.Background(), level, "event not published to NATS: the stream refuses it (raise the stream's max_msg_size)",
			"subject", e.subject, "bytes", len(e.data), "error", err)
	}
	p.pop()
}

// acked drops the oldest event: JetStream stored it.
func (p *Publisher) acked() {
	p.pop()
	p.m.published.Inc()
}

// pop removes the oldest event.
func (p *Publisher) pop() {
	p.mu.Lock()
	p.bytes -= int64(len(p.buf[0].data))
	p.buf[0] = entry{}
	p.buf = p.buf[1:]
	if len(p.buf) == 0 && p.empty != nil {
		close(p.empty)
		p.empty = nil
	}
	p.mu.Unlock()
}

// Flushed returns a channel closed once every event queued so far, and the
// account's state now, have been acknowledged (at once when none waits):
// at shutdown, after the upstream is closed, waiting on it loses nothing
// that JetStream can still take.
func (p *Publisher) Flushed() <-chan struct{} {
	if p.cfg.Account != nil {
		p.noteAccount() // the watcher may not have seen the last change yet
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.buf) == 0 {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	if p.empty == nil {
		p.empty = make(chan struct{})
	}
	return p.empty
}

// watchAccount keeps the self_id and publishes every change of the
// account's online state.
func (p *Publisher) watchAccount(ctx context.Context) {
	ch := p.cfg.Account.Watch()
	for {
		p.noteAccount()
		select {
		case <-ch:
		case <-ctx.Done():
			return
		}
	}
}

// noteAccount takes the account's state now: its self_id, and its online
// state on the status subject when that changed.
func (p *Publisher) noteAccount() {
	st := p.cfg.Account.State()
	p.selfID.Store(st.SelfID)
	p.statusMu.Lock()
	defer p.statusMu.Unlock()
	if up := st.Up(); st.SelfID != 0 && (!p.statusSent || p.lastUp != up) {
		p.statusSent, p.lastUp = true, up
		p.status(st)
	}
}

// EnsureStream creates the stream when it is missing. An existing stream is
// used as it is (the operator's settings win) when it captures the event and
// status subjects and not the API subject; otherwise it is an error that
// says what to change.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg PublisherConfig) error {
	_, err := js.Stream(ctx, cfg.Stream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: cfg.Stream, Subjects: streamSubjects,
			MaxAge: cfg.MaxAge, MaxBytes: cfg.MaxBytes, Storage: jetstream.FileStorage, Duplicates: duplicateWindow})
		if err != nil {
			return fmt.Errorf("create stream %s for %v: %w (does another stream already capture these subjects?)", cfg.Stream, streamSubjects, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("look up stream %s: %w", cfg.Stream, err)
	}
	for _, s := range []string{"onebot.1.event.message.group", StatusSubject(1)} {
		if name, err := js.StreamNameBySubject(ctx, s); err != nil || name != cfg.Stream {
			return fmt.Errorf("stream %s exists but does not capture %s (captured by %q): add %v to its subjects", cfg.Stream, s, name, streamSubjects)
		}
	}
	if name, err := js.StreamNameBySubject(ctx, APISubject(1)); err == nil {
		return fmt.Errorf("stream %s captures the API subject %s: JetStream would answer API requests itself; use the subjects %v", name, APISubject(1), streamSubjects)
	}
	return nil
}

// sleep waits d or until ctx is done; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
