package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/internal/sim"
)

// upstream is the simulated OneBot implementation's forward-WS server: the
// relay dials it, it answers API calls (get_login_info) and sends events.
type upstream struct {
	*sim.WSServer
	conns chan *websocket.Conn
	quit  chan struct{}
}

func newUpstream() (*upstream, error) {
	u := &upstream{conns: make(chan *websocket.Conn, 4), quit: make(chan struct{})}
	var err error
	u.WSServer, err = sim.ListenWS("127.0.0.1:0", nil, func(_ *http.Request, ws *websocket.Conn) {
		select {
		case u.conns <- ws:
		default:
			return // one relay connection at a time
		}
		// Read everything (pongs, API calls) until the connection ends.
		for {
			_, b, err := ws.Read(context.Background())
			if err != nil {
				return
			}
			if bytes.Contains(b, []byte(`"action"`)) {
				go ws.Write(context.Background(), websocket.MessageText, sim.Answer(selfID, b))
			}
		}
	})
	return u, err
}

// targets is N simulated frameworks' reverse-WS servers on one listener,
// target i on path /t/i.
type targets struct {
	*sim.WSServer
	list []*target
	// waiting is set by a sender waiting for the slowest target; targets
	// then poke progress after each event.
	waiting  atomic.Bool
	progress chan struct{}
	stop     chan struct{}
}

// target records what one framework received.
type target struct {
	size     int  // expected event size
	stuck    bool // stops reading after its greeting
	greeted  chan struct{}
	greetOne sync.Once
	connects atomic.Int32

	got       atomic.Uint64 // last seq received in order; the count when nothing was lost
	lost      atomic.Uint64 // seqs skipped
	disorder  atomic.Uint64 // seqs at or below one already received
	bad       atomic.Uint64 // frames neither a bench event of the right size nor a meta event
	meta      atomic.Uint64 // meta events (lifecycle, heartbeat)
	latFrom   atomic.Uint64 // record latency of seqs from here on (0: none)
	latMu     sync.Mutex
	latencies []int64 // nanoseconds
}

func newTargets(n, size int, stuck int) (*targets, error) {
	ts := &targets{progress: make(chan struct{}, 1), stop: make(chan struct{})}
	for i := range n {
		ts.list = append(ts.list, &target{size: size, stuck: i < stuck, greeted: make(chan struct{})})
	}
	var err error
	ts.WSServer, err = sim.ListenWS("127.0.0.1:0", nil, func(r *http.Request, ws *websocket.Conn) {
		i, err := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/t/"))
		if err != nil || i < 0 || i >= len(ts.list) {
			return
		}
		ts.serve(ts.list[i], ws)
	})
	return ts, err
}

func (ts *targets) close() {
	close(ts.stop)
	ts.WSServer.Close()
}

// url returns target i's address.
func (ts *targets) url(i int) string { return ts.URL + "/t/" + strconv.Itoa(i) }

func (ts *targets) serve(t *target, ws *websocket.Conn) {
	t.connects.Add(1)
	hdr := make([]byte, headerLen)
	var rest []byte
	for {
		typ, r, err := ws.Reader(context.Background())
		if err != nil {
			return
		}
		n, err := io.ReadFull(r, hdr)
		total, last := n, byte(0)
		if n > 0 {
			last = hdr[n-1]
		}
		if err == nil { // more than a header: skim the rest
			if rest == nil {
				rest = make([]byte, 64<<10)
			}
			for {
				m, err := r.Read(rest)
				if m > 0 {
					total += m
					last = rest[m-1]
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					return
				}
			}
		} else if !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
			return
		}
		now := time.Now().UnixNano()
		h := hdr[:n]
		seq, sent, ok := parseHeader(h)
		switch {
		case ok && typ == websocket.MessageText && total == t.size && last == '}':
			t.record(seq, now-sent)
			if ts.waiting.Load() {
				select {
				case ts.progress <- struct{}{}:
				default:
				}
			}
		case bytes.Contains(h, []byte(`"post_type":"meta_event"`)):
			t.meta.Add(1)
		default:
			t.bad.Add(1)
		}
		t.greetOne.Do(func() { close(t.greeted) })
		if t.stuck {
			// A framework that stops reading: hold the connection
			// until the run ends.
			<-ts.stop
			return
		}
	}
}

// record accounts for event seq that took lat to arrive.
func (t *target) record(seq uint64, lat int64) {
	want := t.got.Load() + 1
	switch {
	case seq == want:
	case seq > want:
		t.lost.Add(seq - want)
	default:
		t.disorder.Add(1)
		return
	}
	t.got.Store(seq)
	if from := t.latFrom.Load(); from != 0 && seq >= from {
		t.latMu.Lock()
		t.latencies = append(t.latencies, lat)
		t.latMu.Unlock()
	}
}

// minGot returns the smallest seq every healthy (not stuck) target has.
func (ts *targets) minGot() uint64 {
	m := ^uint64(0)
	for _, t := range ts.list {
		if !t.stuck {
			m = min(m, t.got.Load())
		}
	}
	return m
}

// waitWindow blocks until every healthy target is within w events of seq,
// or quit is closed.
func (ts *targets) waitWindow(seq uint64, w int, low *uint64, quit <-chan struct{}) {
	if seq <= *low+uint64(w) {
		return
	}
	for {
		*low = ts.minGot()
		if seq <= *low+uint64(w) {
			return
		}
		ts.waiting.Store(true)
		*low = ts.minGot()
		if seq <= *low+uint64(w) {
			ts.waiting.Store(false)
			return
		}
		select {
		case <-ts.progress:
		case <-time.After(20 * time.Millisecond):
		case <-quit:
			ts.waiting.Store(false)
			return
		}
		ts.waiting.Store(false)
	}
}
