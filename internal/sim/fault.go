package sim

import (
	"errors"
	"io"
	"net"
	"sync"
)

// FaultProxy is a TCP proxy on 127.0.0.1 that can cut or blackhole the
// connections through it, for fault tests.
type FaultProxy struct {
	// Addr is where to connect instead of the target.
	Addr   string
	target string
	ln     net.Listener

	mu        sync.Mutex
	pairs     map[*pair]struct{}
	blackhole chan struct{} // not nil while blackholed; closed to release
	wg        sync.WaitGroup
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
		p.wg.Go(func() { p.pipe(t, c); done() })
		p.wg.Go(func() { p.pipe(c, t); done() })
	}
}

// pipe copies src to dst, holding the bytes while blackholed.
func (p *FaultProxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			hole := p.blackhole
			p.mu.Unlock()
			if hole != nil {
				<-hole
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			if !errors.Is(err, io.EOF) {
				return
			}
			return
		}
	}
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
