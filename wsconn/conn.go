// Package wsconn runs one OneBot WebSocket connection, whichever side dialed
// it: the upstream, a reverse-WS target or a forward-WS client are all a Conn.
//
// A Conn has one reader loop (the caller of Run) and a writer, which also
// sends the keepalive pings (each waits for its pong in a short-lived
// goroutine; the pong arrives through the reader). The writer runs in turns,
// each until nothing is due. A writer goroutine that carried events or
// queued frames in its turn waits for the next Wake; one that carried only
// the greeting, a heartbeat or a ping ends, and the next Wake starts
// another. So a busy connection keeps its writer (starting a goroutine per
// event would grow a new stack each time) and an idle one holds the
// reader's goroutine alone. The writer sends, in this order of priority: the greeting
// (lifecycle connect), a due ping or heartbeat from the connection's own
// timers, frames queued with Send (API calls and responses), then events
// pulled from a Source. Heartbeats therefore never wait behind queued events
// and never pile up: at most one is ever due. When several frames are due,
// the writer writes them as one batch, handed to the kernel in one write(2)
// per BatchBytes (see batchConn). Every frame is counted in the
// connection's metrics, and every end of a connection has one Reason; an end
// obmux chooses is a Disconnect.
//
// Redial is the one dial-and-serve loop of every connection obmux dials
// (the upstream in dial mode and each target): headers, Dial, a failed dial
// logged once per change, Backoff, serve, the end logged by its reason.
package wsconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/onebot"
)

// Config are the settings every connection shares.
type Config struct {
	// PingInterval and PingTimeout drive WebSocket keepalive; an interval of
	// zero disables it.
	PingInterval, PingTimeout time.Duration
	// WriteTimeout closes the connection when one write blocks longer; zero
	// disables it.
	WriteTimeout time.Duration
	// CloseTimeout bounds a graceful close (final frame and close handshake).
	CloseTimeout time.Duration
	// ReadLimit is the largest message read, in bytes.
	ReadLimit int64
	// QueueSize bounds the frames queued with Send, and QueueBytes (if
	// not 0) their bytes; one frame larger than QueueBytes is queued alone.
	QueueSize  int
	QueueBytes int64
	// ReadBudget, if not nil, is shared with other connections: a message
	// that outgrows SmallMessage is read only with a share of it (the
	// reader waits, held, until one is free). The share is given back
	// when the Handler returns, so the Handler must not keep the frame.
	ReadBudget *ReadBudget
	// KeepReadBuffer is the largest read buffer kept from one message to
	// the next (0: 64 KiB). The upstream, which carries large events, keeps
	// one as large as ReadLimit; a peer, which sends small API calls, should
	// not hold on to the buffer of its one large upload.
	KeepReadBuffer int
}

// Item is an event from a Source: its sequence number and its bytes, shared
// with every other connection (never modified).
type Item struct {
	Seq   uint64
	Frame []byte
}

// Source feeds events to a connection's writer after its own frames.
type Source interface {
	// Pull appends the events due next to dst, at most cap(dst)-len(dst),
	// and consumes them.
	Pull(dst []Item) []Item
	// Wrote reports that the event seq was written to the connection.
	Wrote(seq uint64)
}

// Handler is called by the reader loop with every text message and returns
// the kind it found, for the metrics. It must not block for long.
type Handler func(frame []byte) onebot.Kind

// ErrBinary is reported for a binary message: OneBot v11 speaks text.
var ErrBinary = errors.New("binary message (OneBot v11 frames are text)")

// Conn is one OneBot WebSocket connection. Configure it with the Set methods
// before Run; Send, Wake and Close may be called from any goroutine.
type Conn struct {
	ws  *websocket.Conn
	raw io.Closer
	bc  *batchConn // raw, when Dial or Accept made it: the writer batches
	cfg Config
	st  *health.Stats
	log *slog.Logger

	greeting  []byte
	src       Source
	hbEvery   time.Duration
	heartbeat func() []byte

	scratch  []byte         // the reader's buffer, reused
	reserved int64          // the reader's share of cfg.ReadBudget, if any
	held     atomic.Int32   // > 0 while the reader is paused on purpose
	pings    sync.WaitGroup // the ping in flight, if any
	resumed  atomic.Int64   // unix ns of the last end of a pause

	wstate atomic.Int32  // the writer's: writerOff, writerIdle, ...
	wake   chan struct{} // to the writer while it is writerParked
	w      *writer       // the writer's state, from turn to turn (set in Run)
	turns  func()        // writeTurns, made once: a go statement with it allocates nothing
	done   chan struct{} // closed when the connection is ending
	queued atomic.Int32  // len(queue), plus one while a close is requested

	mu         sync.Mutex
	queue      []queued
	qbytes     int64  // bytes in queue
	final      []byte // written last on a graceful close
	closeAt    *Disconnect
	closeTimer *time.Timer
	ended      bool
	cause      health.Reason
	err        error
	stop       context.CancelFunc
}

type queued struct {
	frame []byte
	kind  onebot.Kind
	left  func() // see SendThen; nil: none
}

// New wraps ws. raw, if not nil, is the network connection under ws: closing
// it is how a close that the peer does not answer is cut short (coder/websocket
// alone may wait 10 s). st receives the connection's state and metrics.
func New(ws *websocket.Conn, raw io.Closer, st *health.Stats, log *slog.Logger, cfg Config) *Conn {
	ws.SetReadLimit(cfg.ReadLimit)
	bc, _ := raw.(*batchConn)
	return &Conn{ws: ws, raw: raw, bc: bc, cfg: cfg, st: st, log: log, wake: make(chan struct{}, 1), done: make(chan struct{})}
}

// SetGreeting makes frame the first frame written.
func (c *Conn) SetGreeting(frame []byte) { c.greeting = frame }

// SetSource makes the writer send src's events after queued frames.
func (c *Conn) SetSource(src Source) { c.src = src }

// SetHeartbeat makes the writer send frame() every interval, ahead of queued
// frames and events. A zero interval sends none.
func (c *Conn) SetHeartbeat(interval time.Duration, frame func() []byte) {
	c.hbEvery, c.heartbeat = interval, frame
}

// Done is closed when the connection is ending (Run's end is near).
func (c *Conn) Done() <-chan struct{} { return c.done }

// Stats returns the connection's state and metrics.
func (c *Conn) Stats() *health.Stats { return c.st }

// Send queues frame (an API call or response) for the writer. It never
// blocks: when the queue is full (QueueSize frames or QueueBytes bytes) or
// the connection has ended, the frame is dropped, counted, and Send returns
// false.
func (c *Conn) Send(frame []byte, kind onebot.Kind) bool { return c.SendThen(frame, kind, nil) }

// SendThen is Send that also calls left (if not nil) once frame has left
// the queue: after its write, whether that succeeded or not, or when the
// queue is discarded because the connection ends. left runs on another
// goroutine, or on the caller's of Close, without c's lock held. When
// SendThen returns false, left is not called.
func (c *Conn) SendThen(frame []byte, kind onebot.Kind, left func()) bool {
	c.mu.Lock()
	if c.ended || c.closeAt != nil {
		c.mu.Unlock()
		c.st.M.Dropped[health.DropTargetGone].Inc()
		return false
	}
	if len(c.queue) >= c.cfg.QueueSize ||
		(c.cfg.QueueBytes > 0 && len(c.queue) > 0 && c.qbytes+int64(len(frame)) > c.cfg.QueueBytes) {
		c.mu.Unlock()
		c.st.M.Dropped[health.DropQueueFull].Inc()
		return false
	}
	c.queue = append(c.queue, queued{frame, kind, left})
	c.qbytes += int64(len(frame))
	c.queued.Add(1)
	c.mu.Unlock()
	c.Wake()
	return true
}

// Hold tells keepalive that the reader is paused on purpose (on) or goes on
// (off): while held, a late pong does not end the connection, since the
// reader that would see it is waiting.
func (c *Conn) Hold(on bool) {
	if on {
		c.held.Add(1)
	} else {
		c.resumed.Store(time.Now().UnixNano())
		c.held.Add(-1)
	}
}

// isHeld reports whether the reader is paused, or was within the last ping
// timeout: after a pause, the pong may still wait behind the frames that
// piled up.
func (c *Conn) isHeld() bool {
	return c.held.Load() > 0 || time.Since(time.Unix(0, c.resumed.Load())) < c.cfg.PingTimeout
}

// The writer's states (Conn.wstate).
const (
	writerOff     int32 = iota // before Run: a Wake has nothing to start
	writerIdle                 // no writer goroutine: a Wake starts one
	writerRunning              // a turn is running
	writerAgain                // woken while running: the turn looks again
	writerParked               // the writer waits on c.wake: a Wake sends there
	writerEnded                // the writer has stopped for good
)

// Wake tells the writer that its Source may have events (or a frame, an
// alarm, a close): it starts a writer turn, unless one is running, which
// then looks again before it ends.
func (c *Conn) Wake() {
	for {
		switch c.wstate.Load() {
		case writerIdle:
			if c.wstate.CompareAndSwap(writerIdle, writerRunning) {
				go c.turns()
				return
			}
		case writerParked:
			if c.wstate.CompareAndSwap(writerParked, writerRunning) {
				c.wake <- struct{}{} // the one send of this wait: never blocks
				return
			}
		case writerRunning:
			if c.wstate.CompareAndSwap(writerRunning, writerAgain) {
				return
			}
		default: // off, already woken, or ended
			return
		}
	}
}

// Close ends the connection gracefully: queued frames (counted as dropped,
// disconnected) and events not yet written are discarded, final (if not nil)
// is written, then a close frame with d's code and text, waiting for the
// peer's at most CloseTimeout. d's reason is what the metrics and logs
// record. Close does not wait; Run returns when the connection is gone. Only
// the first Close counts.
func (c *Conn) Close(d Disconnect, final []byte) {
	var left []func()
	defer func() { runAll(left) }() // after the unlock
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended || c.closeAt != nil {
		return
	}
	c.setCause(d.Reason, nil)
	left = c.discardQueue()
	c.closeAt, c.final = &d, final
	c.queued.Store(1)
	// A writer stuck on a peer that does not read never gets to the close:
	// cut it after CloseTimeout.
	c.closeTimer = time.AfterFunc(c.cfg.CloseTimeout, func() {
		c.ws.CloseNow()
		c.closeRaw()
	})
	c.Wake()
}

// Abort ends the connection at once, without a close handshake: d's reason
// and err are recorded (unless a cause came first), its code and text are not
// sent.
func (c *Conn) Abort(d Disconnect, err error) {
	c.mu.Lock()
	c.setCause(d.Reason, err)
	stop := c.stop
	c.mu.Unlock()
	if stop != nil {
		stop()
	}
	c.ws.CloseNow()
	c.closeRaw()
}

// discardQueue drops the queued frames, counted, and returns their left
// functions, to be run once c.mu is unlocked. c.mu held.
func (c *Conn) discardQueue() []func() {
	if len(c.queue) > 0 {
		c.st.M.Dropped[health.DropDisconnected].Add(float64(len(c.queue)))
	}
	var left []func()
	for _, q := range c.queue {
		if q.left != nil {
			left = append(left, q.left)
		}
	}
	c.queue, c.qbytes = nil, 0
	return left
}

func runAll(fns []func()) {
	for _, f := range fns {
		f()
	}
}

// setCause records why the connection ends; the first cause wins. c.mu held.
func (c *Conn) setCause(cause health.Reason, err error) {
	// The peer ending the connection (close frame, EOF, reset) explains the
	// end better than the write that failed on the connection it ended,
	// whichever was seen first. Not so after obmux closed it itself (a
	// requested close, the write timeout): then the first cause stands.
	// A write refused because the peer had gone (closed_by_peer already)
	// gives way too: the reader's close frame says what the peer meant.
	peerEnded := cause == health.ReasonClosedByPeer && !errors.Is(err, net.ErrClosed)
	var lost *writeLostError
	byWriter := c.cause == health.ReasonWriteError || errors.As(c.err, &lost)
	if c.hasCause() && !(peerEnded && byWriter && c.closeAt == nil && !errors.Is(c.err, errWriteTimeout)) {
		return
	}
	c.cause, c.err = cause, err
	if err == nil {
		c.err = errNoError
	}
}

// errWriteTimeout is the cause of a connection closed by the write timeout.
var errWriteTimeout = errors.New("write timeout")

var errNoError = errors.New("")

func (c *Conn) hasCause() bool { return c.err != nil }

func (c *Conn) closeRaw() {
	if c.raw != nil {
		c.raw.Close()
	}
}

// Run serves the connection until it ends, calling handle for every text
// message read, and returns why it ended. Cancelling parent aborts it (the
// cause is shutdown, unless one came first); use Close for a graceful end. Run marks the connection up in its Stats on entry and
// down on return.
func (c *Conn) Run(parent context.Context, handle Handler) (health.Reason, error) {
	ctx, cancel := context.WithCancel(parent)
	c.mu.Lock()
	c.stop = cancel
	c.mu.Unlock()
	// coder/websocket reads and writes below use context.Background(): a
	// context with a Done channel costs an AfterFunc per frame. Stopping is
	// done by closing the connection instead.
	stopWatch := context.AfterFunc(ctx, func() {
		if parent.Err() != nil {
			// Run's context was cancelled (not ctx by Abort or a writer
			// that stopped, which record their cause first): that is the
			// cause, before the close makes the reader and the writer fail.
			c.mu.Lock()
			c.setCause(health.ReasonShutdown, nil)
			c.mu.Unlock()
		}
		close(c.done)
		c.ws.CloseNow()
		c.closeRaw()
		c.Wake() // a writer turn sees ctx ended and stops
	})
	defer stopWatch()
	c.st.Up()

	c.w, c.turns = c.newWriter(ctx, cancel), c.writeTurns
	c.wstate.Store(writerRunning)
	go c.turns()
	reason, err := c.readLoop(handle)
	c.mu.Lock()
	c.setCause(reason, err)
	c.ended = true
	left := c.discardQueue()
	reason, err = c.cause, c.err
	if c.closeTimer != nil {
		c.closeTimer.Stop()
	}
	c.mu.Unlock()
	runAll(left)
	cancel()
	<-c.w.stopped
	c.pings.Wait() // ends at once: the connection is closed by now
	if err == errNoError {
		err = nil
	}
	c.st.Down(reason, err)
	return reason, err
}

func (c *Conn) readLoop(handle Handler) (health.Reason, error) {
	m := c.st.M
	for {
		typ, b, err := c.read()
		if err != nil {
			var ce websocket.CloseError
			switch {
			case errors.As(err, &ce):
				return health.ReasonClosedByPeer, fmt.Errorf("peer closed the connection: %w", ce)
			case errors.Is(err, websocket.ErrMessageTooBig):
				m.Dropped[health.DropOversized].Inc()
				m.FramesIn[onebot.KindInvalid].Inc()
				return health.ReasonReadError, fmt.Errorf("message over the %d byte read limit (closed with 1009): %w", c.cfg.ReadLimit, err)
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, io.ErrUnexpectedEOF),
				errors.Is(err, syscall.ECONNRESET): // the peer reset it (it left with frames it had not read)
				return health.ReasonClosedByPeer, fmt.Errorf("connection lost: %w", err)
			}
			return health.ReasonReadError, fmt.Errorf("read: %w", err)
		}
		m.BytesIn.Add(float64(len(b)))
		if typ != websocket.MessageText {
			m.FramesIn[onebot.KindInvalid].Inc()
			m.Dropped[health.DropInvalid].Inc()
			c.log.Warn("frame dropped", "error", ErrBinary, "bytes", len(b))
			continue
		}
		m.FramesIn[handle(b)].Inc()
		c.giveBack()
	}
}

// errGone ends a read that waited for the read budget while the connection
// ended.
var errGone = errors.New("connection ended while waiting for the read budget")

// reserve takes the reader's share of the read budget, holding the reader
// (for keepalive) while it waits.
func (c *Conn) reserve() bool {
	n := c.cfg.ReadLimit
	return c.cfg.ReadBudget.take(n, c.done, func() func() {
		c.log.Debug("large message: reading it waits for the shared read budget", "budget_bytes", c.cfg.ReadBudget.Size())
		c.Hold(true)
		return func() { c.Hold(false) }
	}) && func() bool { c.reserved = n; return true }()
}

// giveBack returns the reader's share of the read budget, if it holds one.
func (c *Conn) giveBack() {
	if c.reserved > 0 {
		c.cfg.ReadBudget.give(c.reserved)
		c.reserved = 0
	}
}

// read reads one message into the reused scratch buffer and returns a copy
// of exactly its size. websocket.Conn.Read (io.ReadAll) would grow a fresh
// buffer for every message, zeroing up to twice the message's size: for 16
// KiB and 1 MiB events that cost more CPU than the rest of the relay, and
// the oversized buffers stayed alive in the ring.
func (c *Conn) read() (websocket.MessageType, []byte, error) {
	typ, r, err := c.ws.Reader(context.Background())
	if err != nil {
		return 0, nil, err
	}
	buf := c.scratch[:0]
	for {
		if len(buf) == cap(buf) {
			// Double, but never beyond what the read limit lets in (it
			// reads one byte more, and one more Read reports the excess),
			// and straight there from two thirds of the way.
			n := max(2*cap(buf), 4<<10)
			if end := int(c.cfg.ReadLimit) + 2; c.cfg.ReadLimit > 0 && n+n/2 > end {
				n = max(end, len(buf)+1)
			}
			if n > SmallMessage && c.cfg.ReadBudget != nil && c.reserved == 0 && !c.reserve() {
				return 0, nil, errGone
			}
			grown := make([]byte, len(buf), n)
			copy(grown, buf)
			buf = grown
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			c.giveBack()
			return 0, nil, err
		}
	}
	keep := c.cfg.KeepReadBuffer
	if keep == 0 {
		keep = SmallMessage
	}
	switch {
	case c.reserved > 0:
		// Under the read budget: the message keeps what it takes, exactly
		// (a second copy only when the buffer is a quarter too large),
		// counted until it is handled; the rest of the share goes back
		// now, so that a message waiting in its Handler (a caller held at
		// its in-flight limit) holds no more of the budget than its size.
		c.scratch = nil
		if cap(buf)-len(buf) > len(buf)/4 {
			buf = bytes.Clone(buf)
		}
		if keep := int64(cap(buf)); keep < c.reserved {
			c.cfg.ReadBudget.give(c.reserved - keep)
			c.reserved = keep
		}
		return typ, buf[:len(buf):len(buf)], nil
	case cap(buf) <= keep:
		c.scratch = buf
	default:
		c.scratch = nil
	}
	return typ, bytes.Clone(buf), nil
}

// write writes one frame with the write timeout armed on timer.
func (c *Conn) write(timer *time.Timer, frame []byte, kind onebot.Kind) error {
	if timer != nil {
		timer.Reset(c.cfg.WriteTimeout)
	}
	err := c.ws.Write(context.Background(), websocket.MessageText, frame)
	if timer != nil {
		timer.Stop()
	}
	if err != nil {
		return err
	}
	c.st.M.FramesOut[kind].Inc()
	c.st.M.BytesOut.Add(float64(len(frame)))
	return nil
}

// writeTurns is a writer goroutine: it runs turns, waiting for a Wake
// after one that carried events or frames, and ends after one that carried
// none, or when the writer stops (its cause recorded, Run's context
// cancelled, w.stopped closed).
func (c *Conn) writeTurns() {
	w := c.w
	for {
		if s := w.turn(); s != nil {
			w.release()
			c.mu.Lock()
			c.setCause(s.reason, s.err)
			c.mu.Unlock()
			c.wstate.Store(writerEnded)
			w.cancel()
			close(w.stopped)
			return
		}
		next := writerIdle
		if w.carried {
			next = writerParked
		}
		w.carried = false
		if !c.wstate.CompareAndSwap(writerRunning, next) {
			c.wstate.Store(writerRunning) // woken during the turn: look again
			continue
		}
		if next == writerIdle {
			return // the next Wake starts a goroutine
		}
		<-c.wake // the Wake that sent it made the state writerRunning
	}
}

// turn writes the greeting (on the first turn), then between any two
// frames a due ping or heartbeat first, then a close or a queued frame, then
// events, until nothing is due; it returns why the writer stops, or nil
// when it has nothing more to write.
func (w *writer) turn() *stopped {
	c := w.c
	if !w.greeted {
		w.greeted = true
		if c.greeting != nil {
			if err := w.write(c.greeting, onebot.KindLifecycle); err != nil {
				return writeFailed(err)
			}
		}
	}
	for {
		// In a batch (written at once), timers are looked at every
		// BatchBytes, not between every two frames.
		if !w.inBatch || w.sinceCheck >= BatchBytes {
			w.sinceCheck = 0
			if s := w.due(); s != nil {
				return s
			}
		}
		if c.queued.Load() > 0 {
			if s := w.writeQueued(); s != nil {
				return s
			}
			continue
		}
		wrote, s := w.writeEvent()
		if s != nil {
			return s
		}
		if wrote {
			continue
		}
		if w.ctx.Err() != nil {
			return &stopped{health.ReasonShutdown, nil}
		}
		if w.alarms.Load() == 0 {
			return nil
		}
	}
}

// stopped is why the writer stops: what writeLoop returns.
type stopped struct {
	reason health.Reason
	err    error
}

// writeFailed stops the writer for a write that failed with err. A write
// the kernel refused because the peer had closed or reset the connection
// (EPIPE, ECONNRESET) is the peer's end, closed_by_peer, as the reader
// would have called it had it seen the close first.
func writeFailed(err error) *stopped {
	if peerGone(err) {
		return &stopped{health.ReasonClosedByPeer, &writeLostError{err}}
	}
	return &stopped{health.ReasonWriteError, fmt.Errorf("write: %w", err)}
}

// writeLostError is a write that failed because the peer had gone: the
// writer's closed_by_peer, which the reader's may still replace.
type writeLostError struct{ err error }

func (e *writeLostError) Error() string { return "connection lost: write: " + e.err.Error() }
func (e *writeLostError) Unwrap() error { return e.err }

// peerGone reports whether err says the peer closed or reset the connection.
func peerGone(err error) bool {
	return errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// writer is the writer's state, kept from turn to turn: Run's context, the
// write timeout's timer, the keepalive and heartbeat tickers, the ping in
// flight, the events pulled from the source but not written yet, and the
// batch in progress.
type writer struct {
	c       *Conn
	ctx     context.Context // Run's: once it ends, the writer stops
	cancel  func()          // ends Run's context
	stopped chan struct{}   // closed when the writer has stopped
	greeted bool
	carried bool        // this turn wrote an event or a queued frame
	timer   *time.Timer // the write timeout; nil: none
	// alarms are raised by the keepalive and heartbeat timers and by the
	// ping in flight (its result in pingErr), each with a Wake: a turn
	// looks at them with one atomic load.
	alarms  atomic.Uint32
	pingErr error
	pinging bool
	batch   []Item    // events pulled from the source, in items
	items   *[64]Item // from itemPool while pulling; nil when idle
	pos     int       // the next of batch to write
	release func()    // stops the timers

	// The batch (see batchConn): whether one is in progress, its events
	// not yet reported written (each with the byte count that ends it),
	// and the bytes written into it since the timers were looked at.
	inBatch    bool
	pend       []pending
	sinceCheck int
}

// pending is an event written into a batch: it is on its way once the
// batchConn has written end bytes.
type pending struct {
	end, seq uint64
}

// newWriter arms the connection's write timeout and its keepalive and
// heartbeat tickers for a writer stopping with ctx; release stops them.
func (c *Conn) newWriter(ctx context.Context, cancel func()) *writer {
	w := &writer{c: c, ctx: ctx, cancel: cancel, stopped: make(chan struct{})}
	var stops []func()
	if c.cfg.WriteTimeout > 0 {
		w.timer = time.AfterFunc(time.Hour, func() {
			c.mu.Lock()
			c.setCause(health.ReasonWriteError, fmt.Errorf("a write blocked longer than %s: %w", c.cfg.WriteTimeout, errWriteTimeout))
			c.mu.Unlock()
			c.ws.CloseNow()
			c.closeRaw()
		})
		w.timer.Stop()
		stops = append(stops, func() { w.timer.Stop() })
	}
	// Keepalive: a ping every PingInterval from a short-lived goroutine
	// (the pong comes through the reader), its result back here, so that
	// an idle connection holds the reader's goroutine alone.
	if c.cfg.PingInterval > 0 {
		stops = append(stops, w.every(c.cfg.PingInterval, alarmPing))
	}
	if c.hbEvery > 0 && c.heartbeat != nil {
		stops = append(stops, w.every(c.hbEvery, alarmHeartbeat))
	}
	w.release = func() {
		for _, stop := range stops {
			stop()
		}
	}
	return w
}

// The writer's alarms.
const (
	alarmHeartbeat uint32 = 1 << iota // a heartbeat is due
	alarmPing                         // a ping is due
	alarmPinged                       // the ping in flight has its result
)

// raise raises alarm a and wakes the writer.
func (w *writer) raise(a uint32) {
	w.alarms.Or(a)
	w.c.Wake()
}

// every raises alarm a every d, as a ticker would (a tick not yet looked
// at is not repeated); the function returned stops it (at most one more
// raise may follow, on a writer that no longer looks).
func (w *writer) every(d time.Duration, a uint32) func() {
	var p struct {
		t       *time.Timer
		stopped atomic.Bool
	}
	// Made stopped and armed once p.t is set: the function reads it.
	p.t = time.AfterFunc(time.Hour, func() {
		w.raise(a)
		if !p.stopped.Load() {
			p.t.Reset(d)
		}
	})
	p.t.Stop()
	p.t.Reset(d)
	return func() {
		p.stopped.Store(true)
		p.t.Stop()
	}
}

// write writes one frame with the write timeout armed (in a batch, the
// batchConn arms it around each of its own writes instead).
func (w *writer) write(frame []byte, kind onebot.Kind) error {
	if !w.inBatch {
		return w.c.write(w.timer, frame, kind)
	}
	w.sinceCheck += len(frame)
	return w.c.write(nil, frame, kind)
}

// beginBatch starts a batch, when the connection can: several frames are
// due.
func (w *writer) beginBatch() {
	if w.c.bc == nil || w.inBatch {
		return
	}
	w.inBatch = true
	w.c.bc.begin(w.timer, w.c.cfg.WriteTimeout)
}

// endBatch writes the batch in progress, if any, and reports its events
// written.
func (w *writer) endBatch() error {
	if !w.inBatch {
		return nil
	}
	w.inBatch = false
	err := w.c.bc.end()
	w.reportWritten()
	w.pend = w.pend[:0]
	return err
}

// wrote reports event seq written: at once, or in a batch once the write
// that carried its last byte returned.
func (w *writer) wrote(seq uint64) {
	if !w.inBatch {
		w.c.src.Wrote(seq)
		return
	}
	w.pend = append(w.pend, pending{w.c.bc.accepted(), seq})
	w.reportWritten()
}

// reportWritten reports the batch's events that the kernel has to the
// Source: the last of them is enough, Wrote means every one up to it.
func (w *writer) reportWritten() {
	sent, n := w.c.bc.written(), 0
	for n < len(w.pend) && w.pend[n].end <= sent {
		n++
	}
	if n > 0 {
		w.c.src.Wrote(w.pend[n-1].seq)
		w.pend = append(w.pend[:0], w.pend[n:]...)
	}
}

// several reports whether the events in batch are worth a batch: more than
// one, or one larger than coder/websocket's 4 KiB buffer (which leaves a
// client's masked frame in 4 KiB writes).
func several(batch []Item) bool {
	return len(batch) > 1 || len(batch) == 1 && len(batch[0].Frame) > 4<<10
}

// due sends a due heartbeat or starts a due ping, or judges the ping that
// came back, without waiting.
func (w *writer) due() *stopped {
	if w.alarms.Load() == 0 {
		return nil
	}
	a := w.alarms.Swap(0)
	if a&alarmPinged != 0 {
		if s := w.pinged(w.pingErr); s != nil {
			return s
		}
	}
	if a&alarmHeartbeat != 0 {
		if s := w.sendHeartbeat(); s != nil {
			return s
		}
	}
	if a&alarmPing != 0 {
		w.startPing()
	}
	return nil
}

// sendHeartbeat writes one heartbeat.
func (w *writer) sendHeartbeat() *stopped {
	if err := w.write(w.c.heartbeat(), onebot.KindHeartbeat); err != nil {
		return writeFailed(err)
	}
	w.c.st.M.Heartbeats.Inc()
	return nil
}

// startPing sends a keepalive ping, unless one is in flight; its result
// raises alarmPinged.
func (w *writer) startPing() {
	if w.pinging {
		return
	}
	w.pinging = true
	c := w.c
	c.pings.Go(func() {
		rtt, err := ping(c.ws, c.cfg.PingTimeout)
		if err == nil {
			c.st.RTT(rtt)
		}
		w.pingErr = err // read by the writer once it sees the alarm
		w.raise(alarmPinged)
	})
}

// pinged judges a ping's result: a late pong ends the connection, unless
// the reader is paused (the pong then waits unread).
func (w *writer) pinged(err error) *stopped {
	w.pinging = false
	switch {
	case err == nil:
		return nil
	case errors.Is(err, errKeepaliveTimeout) && w.c.isHeld():
		return nil
	case errors.Is(err, errKeepaliveTimeout):
		return &stopped{health.ReasonKeepaliveTimeout, err}
	}
	return writeFailed(err)
}

// writeQueued writes the first queued frame, or carries out a requested
// close, or stops when the reader has ended the connection.
func (w *writer) writeQueued() *stopped {
	c := w.c
	c.mu.Lock()
	if req := c.closeAt; req != nil {
		final := c.final
		c.mu.Unlock()
		if err := w.endBatch(); err != nil {
			return writeFailed(err)
		}
		reason, err := c.closeGracefully(req, final)
		return &stopped{reason, err}
	}
	if c.ended || len(c.queue) == 0 {
		// The reader has ended the connection and dropped the queue.
		s := &stopped{c.cause, c.err}
		c.mu.Unlock()
		return s
	}
	next := c.queue[0]
	c.queue[0] = queued{}
	c.queue = c.queue[1:]
	c.qbytes -= int64(len(next.frame))
	more := c.queued.Add(-1) > 0
	c.mu.Unlock()
	if more || w.pos < len(w.batch) {
		w.beginBatch() // several frames due
	}
	// Written, or copied into the batch: its bytes are no longer held.
	w.carried = true
	err := w.write(next.frame, next.kind)
	if next.left != nil {
		next.left()
	}
	if err != nil {
		return writeFailed(err)
	}
	return nil
}

// writeEvent writes the next event pulled from the source, or pulls more
// (written on the next turns); it reports whether there was anything.
func (w *writer) writeEvent() (bool, *stopped) {
	if w.pos < len(w.batch) {
		it := w.batch[w.pos]
		w.batch[w.pos] = Item{}
		w.pos++
		w.carried = true
		if err := w.write(it.Frame, onebot.KindEvent); err != nil {
			return true, writeFailed(err)
		}
		w.wrote(it.Seq)
		return true, nil
	}
	// Nothing more due of what was pulled: the batch goes out before the
	// next Pull (which takes what was pulled as written) or a wait.
	if err := w.endBatch(); err != nil {
		return true, writeFailed(err)
	}
	if w.c.src != nil {
		if w.items == nil {
			w.items = itemPool.Get().(*[64]Item)
		}
		if w.batch, w.pos = w.c.src.Pull(w.items[:0]), 0; len(w.batch) > 0 {
			if several(w.batch) {
				w.beginBatch()
			}
			return true, nil
		}
		// Nothing due: an idle connection holds no pull buffer (the items
		// written were cleared as they went).
		itemPool.Put(w.items)
		w.items, w.batch = nil, nil
	}
	return false, nil
}

// itemPool holds the writers' pull buffers (64 items: 2 KiB), taken while
// events come and given back when there are none.
var itemPool = sync.Pool{New: func() any { return new([64]Item) }}

func (c *Conn) closeGracefully(req *Disconnect, final []byte) (health.Reason, error) {
	// Close's timer bounds this whole step: the final frame and the handshake.
	if final != nil {
		if err := c.write(nil, final, onebot.KindLifecycle); err != nil {
			return health.ReasonWriteError, fmt.Errorf("write final frame: %w", err)
		}
	}
	c.ws.Close(req.Code, req.Text)
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause, nil
}

// HTTPStatusError is a failed WebSocket handshake with the HTTP status the
// peer answered.
type HTTPStatusError struct {
	Status int
	Err    error
}

func (e *HTTPStatusError) Error() string {
	return fmt.Sprintf("handshake refused with HTTP %d %s", e.Status, http.StatusText(e.Status))
}

func (e *HTTPStatusError) Unwrap() error { return e.Err }
