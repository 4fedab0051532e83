package sim

import (
	"net"
	"sync"
	"time"
)

// FaultProxy is a TCP proxy on 127.0.0.1 that can cut, blackhole, delay or
// cut mid-frame the connections through it, for fault tests. The "server"
// side is the target it proxies to; the "client" side is whoever connects.
type FaultProxy struct {
	// Addr is where to connect instead of the target.
	Addr   string
	target string
	ln     net.Listener

	mu        sync.Mutex
	pairs     map[*pair]struct{}
	blackhole chan struct{} // not nil while blackholed; closed to release
	delay     time.Duration
	midFrame  *midFrameCut
	wg        sync.WaitGroup
}

// midFrameCut is an armed CutMidFrame.
type midFrameCut struct {
	fromServer bool
	minBytes   int
	done       chan struct{}
}

type pair struct{ a, b net.Conn }

func (p *pair) close() { p.a.Close(); p.b.Close() }

// NewFaultProxy proxies 127.0.0.1:<free port> to target (host:port).
func NewFaultProxy(target string) (*FaultProxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &FaultProxy{Addr: ln.Addr().String(), target: target, ln: ln, pairs: map[*pair]struct{}{}}
	p.wg.Go(p.accept)
	return p, nil
}

func (p *FaultProxy) accept() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		t, err := net.Dial("tcp", p.target)
		if err != nil {
			c.Close()
			continue
		}
		pr := &pair{c, t}
		p.mu.Lock()
		p.pairs[pr] = struct{}{}
		p.mu.Unlock()
		var once sync.Once
		done := func() {
			once.Do(func() {
				pr.close()
				p.mu.Lock()
				delete(p.pairs, pr)
				p.mu.Unlock()
			})
		}
		p.wg.Go(func() { p.pipe(t, c, false, pr); done() })
		p.wg.Go(func() { p.pipe(c, t, true, pr); done() })
	}
}

// pipe copies src to dst, holding the bytes while blackholed, delaying them
// while a delay is set, and cutting pr in the middle of a chunk when armed.
func (p *FaultProxy) pipe(dst, src net.Conn, fromServer bool, pr *pair) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			hole, delay, cut := p.blackhole, p.delay, p.midFrame
			if cut != nil && (cut.fromServer != fromServer || n < cut.minBytes) {
				cut = nil
			}
			if cut != nil {
				p.midFrame = nil
			}
			p.mu.Unlock()
			if hole != nil {
				<-hole
			}
			if delay > 0 {
				time.Sleep(delay) // the injected fault, not a wait
			}
			if cut != nil {
				dst.Write(buf[:n/2])
				pr.close()
				close(cut.done)
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// Delay holds every chunk of bytes for d before passing it on, in both
// directions (0 turns it off): a slow link.
func (p *FaultProxy) Delay(d time.Duration) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.delay = d
}

// CutMidFrame arms a cut: the next chunk of at least minBytes read from the
// server side (fromServer) or the client side is passed on only in half, and
// the connection is closed at once, so the receiver sees a truncated
// WebSocket frame. The returned channel is closed once the cut happened.
func (p *FaultProxy) CutMidFrame(fromServer bool, minBytes int) <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.midFrame = &midFrameCut{fromServer: fromServer, minBytes: minBytes, done: make(chan struct{})}
	return p.midFrame.done
}

// Cut closes every connection through the proxy at once.
func (p *FaultProxy) Cut() int {
	p.mu.Lock()
	pairs := p.pairs
	p.pairs = map[*pair]struct{}{}
	p.mu.Unlock()
	for pr := range pairs {
		pr.close()
	}
	return len(pairs)
}

// Connections returns how many connections go through the proxy now.
func (p *FaultProxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pairs)
}

// Blackhole stops (true) or resumes (false) moving bytes, in both directions,
// leaving the connections open: a peer behind a dead NAT.
func (p *FaultProxy) Blackhole(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case on && p.blackhole == nil:
		p.blackhole = make(chan struct{})
	case !on && p.blackhole != nil:
		close(p.blackhole)
		p.blackhole = nil
	}
}

// Close stops the proxy and closes its connections.
func (p *FaultProxy) Close() {
	p.ln.Close()
	p.Blackhole(false)
	p.Cut()
	p.wg.Wait()
}
