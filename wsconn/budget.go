package wsconn

import "sync"

// SmallMessage is the size up to which a message is read without taking
// from a ReadBudget: every connection may hold a buffer this large.
const SmallMessage = 64 << 10

// ReadBudget bounds the bytes that the connections sharing it read at once
// beyond SmallMessage each. A reader whose message outgrows SmallMessage
// takes a whole ReadLimit from the budget before growing its buffer, so a
// reader that holds a share never waits for more and readers cannot
// deadlock: at most Size/ReadLimit large messages are being read at once.
// Once the message is read, the reader keeps only its size until the
// message has been handled. It is safe for concurrent use.
type ReadBudget struct {
	mu      sync.Mutex
	size    int64
	used    int64
	waiting int
	freed   chan struct{} // closed and replaced when bytes are given back
}

// NewReadBudget returns a budget of size bytes.
func NewReadBudget(size int64) *ReadBudget {
	return &ReadBudget{size: size, freed: make(chan struct{})}
}

// take takes n bytes, waiting while fewer are free (a share larger than the
// whole budget is granted when nothing is taken). wait, called once before
// the first wait, returns a function called after it. It reports false when
// gone is closed first.
func (b *ReadBudget) take(n int64, gone <-chan struct{}, wait func() func()) bool {
	var done func()
	defer func() {
		if done != nil {
			done()
		}
	}()
	for {
		b.mu.Lock()
		if b.used == 0 || b.used+n <= b.size {
			b.used += n
			b.mu.Unlock()
			return true
		}
		freed := b.freed
		b.waiting++
		b.mu.Unlock()
		if done == nil && wait != nil {
			done = wait()
		}
		select {
		case <-freed:
			b.mu.Lock()
			b.waiting--
			b.mu.Unlock()
		case <-gone:
			b.mu.Lock()
			b.waiting--
			b.mu.Unlock()
			return false
		}
	}
}

// give gives back n bytes taken.
func (b *ReadBudget) give(n int64) {
	b.mu.Lock()
	b.used -= n
	close(b.freed)
	b.freed = make(chan struct{})
	b.mu.Unlock()
}

// Used returns the bytes taken now and how many readers wait for some.
func (b *ReadBudget) Used() (used int64, waiting int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used, b.waiting
}

// Size returns the budget's size in bytes.
func (b *ReadBudget) Size() int64 { return b.size }
