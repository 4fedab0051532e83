package wsconn

import (
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// BatchBytes is the most a write batch holds before it goes to the kernel:
// a batch of small frames is written with one write(2) per BatchBytes.
const BatchBytes = 64 << 10

// batchConn is the network connection under a coder/websocket Conn.
// coder/websocket flushes its 4 KiB buffer after every message (and a
// client's masked message every 4 KiB), one write(2) each. While the Conn's
// writer has several frames due it turns batching on: what coder/websocket
// flushes is gathered here and handed to the kernel in one write per
// BatchBytes, and when the batch ends. Off (the writer has one small frame
// or nothing to write), every write goes straight through, as without it.
//
// Control frames written by other goroutines (the reader's pongs, a ping, a
// close echo) join the batch in progress and go out with it: never later
// than the batch's own frames. The buffer is taken from a pool when a batch
// begins and given back when it ends, so an idle connection holds none.
type batchConn struct {
	net.Conn

	mu      sync.Mutex
	on      bool
	buf     *[]byte
	sent    atomic.Uint64 // bytes handed to the kernel, all of each write
	took    atomic.Uint64 // bytes accepted from coder/websocket
	writes  atomic.Uint64 // writes made for batches
	timer   *time.Timer   // the writer's write timeout, armed around each write of a batch
	timeout time.Duration // 0: none
}

var batchPool = sync.Pool{New: func() any { b := make([]byte, 0, BatchBytes); return &b }}

// newBatchConn wraps c.
func newBatchConn(c net.Conn) *batchConn { return &batchConn{Conn: c} }

// Write implements net.Conn: straight through, or into the batch.
func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.on {
		n, err := b.Conn.Write(p)
		b.took.Add(uint64(n))
		b.sent.Add(uint64(n))
		return n, err
	}
	buf := *b.buf
	if len(buf)+len(p) > cap(buf) {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
		if len(p) >= cap(buf) {
			// Larger than a whole batch: no use copying it.
			n, err := b.write(p)
			b.took.Add(uint64(n))
			return n, err
		}
	}
	*b.buf = append(*b.buf, p...)
	b.took.Add(uint64(len(p)))
	return len(p), nil
}

// begin turns batching on, with the write timeout d armed on timer (nil:
// none) around each write the batch makes.
func (b *batchConn) begin(timer *time.Timer, d time.Duration) {
	b.mu.Lock()
	if !b.on {
		b.on, b.buf = true, batchPool.Get().(*[]byte)
		b.timer, b.timeout = timer, d
	}
	b.mu.Unlock()
}

// end writes what the batch holds and turns batching off.
func (b *batchConn) end() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.on {
		return nil
	}
	err := b.flushLocked()
	*b.buf = (*b.buf)[:0]
	batchPool.Put(b.buf)
	b.on, b.buf = false, nil
	return err
}

// written returns how many of the bytes accepted so far the kernel has:
// every frame that ended at or before it is on its way.
func (b *batchConn) written() uint64 { return b.sent.Load() }

// accepted returns how many bytes coder/websocket has written to b.
func (b *batchConn) accepted() uint64 { return b.took.Load() }

// flushLocked writes the batch's bytes. b.mu held.
func (b *batchConn) flushLocked() error {
	buf := *b.buf
	if len(buf) == 0 {
		return nil
	}
	_, err := b.write(buf)
	*b.buf = buf[:0]
	return err
}

// write writes p under the write timeout and counts it. b.mu held.
func (b *batchConn) write(p []byte) (int, error) {
	if b.timer != nil {
		b.timer.Reset(b.timeout)
	}
	n, err := b.Conn.Write(p)
	b.writes.Add(1)
	if b.timer != nil {
		b.timer.Stop()
	}
	b.sent.Add(uint64(n))
	return n, err
}
