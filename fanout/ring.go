package fanout

import "github.com/obmux/obmux/policy"

// ring holds the most recent events, bounded in count and bytes (an event
// counts the capacity of its frame and of the other form of it that its
// Event may hold: the memory it holds). Sequence
// numbers start at 1 and grow forever; seq s lives at entries[s%len].
// It is not safe for concurrent use: Hub guards it.
type ring struct {
	entries  []entry
	first    uint64 // oldest seq held
	next     uint64 // seq the next event gets
	bytes    int64  // bytes held
	maxBytes int64
	total    int64 // bytes ever pushed, for cumulative offsets
}

type entry struct {
	frame []byte
	ev    *policy.Event // what the bots' policies read of it; nil: none needed
	at    int64         // unix nanoseconds when pushed
	cum   int64         // ring.total after this entry was pushed
	size  int64         // the bytes it counts
}

func newRing(count int, maxBytes int64) *ring {
	return &ring{entries: make([]entry, count), first: 1, next: 1, maxBytes: maxBytes}
}

// push appends frame and evicts the oldest events beyond the bounds (the
// newest is always kept). It returns the new event's seq.
func (r *ring) push(frame []byte, ev *policy.Event, now int64) uint64 {
	n := uint64(len(r.entries))
	if r.next-r.first == n {
		r.evict()
	}
	size := int64(cap(frame)) + ev.Bytes()
	r.total += size
	r.entries[r.next%n] = entry{frame: frame, ev: ev, at: now, cum: r.total, size: size}
	r.bytes += size
	seq := r.next
	r.next++
	for r.bytes > r.maxBytes && r.next-r.first > 1 {
		r.evict()
	}
	return seq
}

func (r *ring) evict() {
	e := &r.entries[r.first%uint64(len(r.entries))]
	r.bytes -= e.size
	*e = entry{}
	r.first++
}

// get returns the entry of seq, which must be in [first, next).
func (r *ring) get(seq uint64) *entry { return &r.entries[seq%uint64(len(r.entries))] }

// bytesFrom returns how many bytes the events from seq on hold.
func (r *ring) bytesFrom(seq uint64) int64 {
	if seq < r.first {
		seq = r.first
	}
	if seq >= r.next {
		return 0
	}
	e := r.get(seq)
	return r.total - e.cum + e.size
}
