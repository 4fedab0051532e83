package health

import (
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// family is a per-connection counter or gauge family whose children are
// bound once per connection and kept small: a client_golang child holds its
// label pairs as protobuf messages, its own self-collector and exemplar
// slot, ~500 bytes each, and a target has some 50 of them (26 KiB per
// target, most of an idle connection's heap). A child here is its value, its
// family and its connection: 40 bytes, its labels made only when it is
// collected. The family is a prometheus.Collector of every child bound;
// Metrics.Conn binds each (role, name) once.
type family struct {
	desc   *prometheus.Desc
	typ    prometheus.ValueType
	byRole bool       // the first two labels are role and name (else name alone)
	extra  [][]string // the values of the labels after those, by child index
	mu     sync.Mutex
	slabs  [][]child // the children of each bind
}

// newFamily returns a family called name; extra lists, when it has more
// labels (named more), the values each child index stands for.
func newFamily(name, help string, typ prometheus.ValueType, byRole bool, more []string, extra [][]string) *family {
	labels := []string{"name"}
	if byRole {
		labels = []string{"role", "name"}
	}
	if len(extra) == 0 {
		extra = [][]string{nil}
	}
	return &family{desc: prometheus.NewDesc(name, help, append(labels, more...), nil), typ: typ, byRole: byRole, extra: extra}
}

// conn is the (role, name) of the connection a child belongs to.
type conn struct{ role, name string }

// bind makes the children of c, one per extra label value (one when the
// family has none), in the order of extra.
func (f *family) bind(c *conn) []child {
	slab := make([]child, len(f.extra))
	for i := range slab {
		slab[i] = child{fam: f, conn: c, idx: uint16(i)}
	}
	f.mu.Lock()
	f.slabs = append(f.slabs, slab)
	f.mu.Unlock()
	return slab
}

// Describe implements prometheus.Collector.
func (f *family) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }

// Collect implements prometheus.Collector.
func (f *family) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	slabs := f.slabs[:len(f.slabs):len(f.slabs)]
	f.mu.Unlock()
	for _, slab := range slabs {
		for i := range slab {
			ch <- &slab[i]
		}
	}
}

// child is one bound counter or gauge: a prometheus.Counter and, through
// gauge, a prometheus.Gauge. Whole increments go to ints, anything else to
// the float bits, as client_golang's counter does.
type child struct {
	ints atomic.Uint64
	bits atomic.Uint64 // float64 bits
	fam  *family
	conn *conn
	idx  uint16
}

// Value returns the child's value.
func (c *child) Value() float64 {
	return float64(c.ints.Load()) + math.Float64frombits(c.bits.Load())
}

// Inc adds 1.
func (c *child) Inc() { c.ints.Add(1) }

// Add adds v; a counter panics on a negative v, as client_golang's does.
func (c *child) Add(v float64) {
	if c.fam.typ == prometheus.CounterValue && v < 0 {
		panic("counter cannot decrease in value")
	}
	if v >= 0 && v == math.Trunc(v) && v < 1<<53 {
		c.ints.Add(uint64(v))
		return
	}
	c.addFloat(v)
}

func (c *child) addFloat(v float64) {
	for {
		old := c.bits.Load()
		if c.bits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}

// Desc implements prometheus.Metric.
func (c *child) Desc() *prometheus.Desc { return c.fam.desc }

// Write implements prometheus.Metric: the labels are made now.
func (c *child) Write(m *dto.Metric) error {
	f := c.fam
	values := make([]string, 0, 4)
	if f.byRole {
		values = append(values, c.conn.role)
	}
	values = append(append(values, c.conn.name), f.extra[c.idx]...)
	cm, err := prometheus.NewConstMetric(f.desc, f.typ, c.Value(), values...)
	if err != nil {
		return err
	}
	return cm.Write(m)
}

// Describe implements prometheus.Collector.
func (c *child) Describe(ch chan<- *prometheus.Desc) { ch <- c.fam.desc }

// Collect implements prometheus.Collector.
func (c *child) Collect(ch chan<- prometheus.Metric) { ch <- c }

// gauge is a child used as a prometheus.Gauge.
type gauge struct{ *child }

// Set sets the value to v.
func (g gauge) Set(v float64) {
	g.ints.Store(0)
	g.bits.Store(math.Float64bits(v))
}

// Dec subtracts 1.
func (g gauge) Dec() { g.addFloat(-1) }

// Sub subtracts v.
func (g gauge) Sub(v float64) { g.addFloat(-v) }

// Add adds v.
func (g gauge) Add(v float64) { g.addFloat(v) }

// SetToCurrentTime sets the value to the current Unix time in seconds.
func (g gauge) SetToCurrentTime() { g.Set(float64(time.Now().UnixNano()) / 1e9) }

// histFamily is a per-connection histogram family (labelled by name) with
// compact children, as family is for counters: a child is its bucket
// counts, count and sum, ~150 bytes for 14 buckets where a client_golang
// child with its hot and cold halves and label pairs takes ~1.8 KiB.
type histFamily struct {
	desc   *prometheus.Desc
	bounds []float64
	mu     sync.Mutex
	kids   []*hist
}

func newHistFamily(name, help string, bounds []float64) *histFamily {
	return &histFamily{desc: prometheus.NewDesc(name, help, []string{"name"}, nil), bounds: bounds}
}

// bind makes the histogram of name.
func (f *histFamily) bind(name string) *hist {
	h := &hist{fam: f, name: name, buckets: make([]atomic.Uint64, len(f.bounds))}
	f.mu.Lock()
	f.kids = append(f.kids, h)
	f.mu.Unlock()
	return h
}

// Describe implements prometheus.Collector.
func (f *histFamily) Describe(ch chan<- *prometheus.Desc) { ch <- f.desc }

// Collect implements prometheus.Collector.
func (f *histFamily) Collect(ch chan<- prometheus.Metric) {
	f.mu.Lock()
	kids := f.kids[:len(f.kids):len(f.kids)]
	f.mu.Unlock()
	for _, k := range kids {
		ch <- k
	}
}

// hist is one bound histogram: a prometheus.Observer and Metric. An
// observation is counted first and put in its bucket after, and Write
// reads the buckets first, so that no bucket ever holds more than count.
type hist struct {
	fam     *histFamily
	name    string
	count   atomic.Uint64
	sum     atomic.Uint64 // float64 bits
	buckets []atomic.Uint64
}

// Observe adds one observation of v.
func (h *hist) Observe(v float64) {
	h.count.Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			break
		}
	}
	if i, _ := slices.BinarySearch(h.fam.bounds, v); i < len(h.buckets) {
		h.buckets[i].Add(1)
	}
}

// Desc implements prometheus.Metric.
func (h *hist) Desc() *prometheus.Desc { return h.fam.desc }

// Write implements prometheus.Metric.
func (h *hist) Write(m *dto.Metric) error {
	cum := make(map[float64]uint64, len(h.buckets))
	n := uint64(0)
	for i := range h.buckets {
		n += h.buckets[i].Load()
		cum[h.fam.bounds[i]] = n
	}
	cm, err := prometheus.NewConstHistogram(h.fam.desc, h.count.Load(), math.Float64frombits(h.sum.Load()), cum, h.name)
	if err != nil {
		return err
	}
	return cm.Write(m)
}

// Describe implements prometheus.Collector.
func (h *hist) Describe(ch chan<- *prometheus.Desc) { ch <- h.fam.desc }

// Collect implements prometheus.Collector.
func (h *hist) Collect(ch chan<- prometheus.Metric) { ch <- h }
