package health

import (
	_ "embed"
	"encoding/json"
	"math"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/obmux/obmux/onebot"
)

// statusPage is the status page: one HTML file, its style and script
// inline, that polls /status.
//
//go:embed status.html
var statusPage []byte

// StatusConfig says what the status page shows besides the connections.
type StatusConfig struct {
	Version string
	Started time.Time
	// Account is the QQ account's state (nil: unknown).
	Account *Account
	// Queue returns the events waiting for each peer name
	// (obmux_queue_length); nil shows none.
	Queue func() map[string]float64
	// Redact removes what must never be shown (URL queries, which may hold
	// access_token) from error texts. Required.
	Redact func(string) string
}

// Status is the document GET /status serves (see the README).
type Status struct {
	Version       string       `json:"version"`
	Now           time.Time    `json:"now"`
	Started       time.Time    `json:"started"`
	UptimeSeconds float64      `json:"uptime_seconds"`
	Account       AccountState `json:"account"`
	Connections   []ConnStatus `json:"connections"`
}

// ConnStatus is one connection on the status page. Forward clients on one
// path share their counters (they share their metric series).
type ConnStatus struct {
	Role      Role      `json:"role"`
	Name      string    `json:"name"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since,omitzero"`
	// LastReason is why the connection last ended (a disconnect reason
	// label), "" if it never did; LastError the last error seen, dials
	// included.
	LastReason  string `json:"last_reason,omitempty"`
	LastError   string `json:"last_error,omitempty"`
	Disconnects int    `json:"disconnects"`
	// Waiting says why a connection that is not up is not being dialed.
	Waiting string `json:"waiting,omitempty"`
	// PingRTTSeconds is the last keepalive round trip, 0 before the first.
	PingRTTSeconds float64 `json:"ping_rtt_seconds"`
	// Events counts the events written to a peer, or read from the
	// upstream; EventsPerSecond is their recent rate.
	Events          float64            `json:"events"`
	EventsPerSecond float64            `json:"events_per_second"`
	QueueLength     float64            `json:"queue_length"`
	Dropped         float64            `json:"dropped"`
	DroppedBy       map[string]float64 `json:"dropped_by_reason,omitempty"`
	// Filtered counts events a policy kept from this peer; absent while
	// obmux has no filtering.
	Filtered   *float64  `json:"filtered,omitempty"`
	API        APIStatus `json:"api"`
	Replayed   float64   `json:"replayed"`
	ReplayLost float64   `json:"replay_lost"`
}

// APIStatus is a connection's API calls by outcome and their latency.
type APIStatus struct {
	OK           float64 `json:"ok"`
	Failed       float64 `json:"failed"`
	Timeout      float64 `json:"timeout"`
	UpstreamDown float64 `json:"upstream_down"`
	Forbidden    float64 `json:"forbidden"`
	// AvgSeconds is the mean latency since obmux started; P99Seconds the
	// upper bound of the histogram bucket that holds the 99th percentile.
	AvgSeconds float64 `json:"avg_seconds"`
	P99Seconds float64 `json:"p99_seconds"`
}

// StatusHandler serves the status page on GET / and its data on GET
// /status.
func (mon *Monitor) StatusHandler(cfg StatusConfig) http.Handler {
	sp := &statusPoller{mon: mon, cfg: cfg, samples: map[*Stats]*sample{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		h := w.Header()
		h.Set("Content-Type", "text/html; charset=utf-8")
		h.Set("Cache-Control", "no-store")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; img-src data:; frame-ancestors 'none'")
		w.Write(statusPage)
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		_ = json.NewEncoder(w).Encode(sp.status(time.Now()))
	})
	return mux
}

// statusPoller builds Status documents and keeps the samples that event
// rates are computed from.
type statusPoller struct {
	mon *Monitor
	cfg StatusConfig

	mu      sync.Mutex
	samples map[*Stats]*sample
}

// sample holds two readings of an event counter at least a second apart.
type sample struct {
	prevT, curT time.Time
	prevN, curN float64
}

// rate returns the events per second over the last one to two seconds.
func (s *sample) rate(now time.Time, n float64) float64 {
	if now.Sub(s.curT) >= time.Second {
		s.prevT, s.prevN = s.curT, s.curN
		s.curT, s.curN = now, n
	}
	dt := now.Sub(s.prevT).Seconds()
	if dt < 0.5 || n < s.prevN {
		return 0
	}
	return (n - s.prevN) / dt
}

func (sp *statusPoller) status(now time.Time) Status {
	mon := sp.mon
	mon.mu.Lock()
	conns := make([]*Stats, 0, len(mon.conns))
	for s := range mon.conns {
		conns = append(conns, s)
	}
	mon.mu.Unlock()
	var queue map[string]float64
	if sp.cfg.Queue != nil {
		queue = sp.cfg.Queue()
	}
	redact := sp.cfg.Redact
	out := make([]ConnStatus, 0, len(conns))
	sp.mu.Lock()
	seen := make(map[*Stats]bool, len(conns))
	for _, s := range conns {
		seen[s] = true
		cs := connStatus(s, redact)
		if s.Role != RoleUpstream {
			cs.QueueLength = queue[s.Name]
		}
		smp := sp.samples[s]
		if smp == nil {
			smp = &sample{prevT: now, curT: now, prevN: cs.Events, curN: cs.Events}
			sp.samples[s] = smp
		}
		cs.EventsPerSecond = smp.rate(now, cs.Events)
		out = append(out, cs)
	}
	for s := range sp.samples {
		if !seen[s] {
			delete(sp.samples, s)
		}
	}
	sp.mu.Unlock()
	order := map[Role]int{RoleUpstream: 0, RoleTarget: 1, RoleClient: 2}
	sort.SliceStable(out, func(i, j int) bool {
		if out[i].Role != out[j].Role {
			return order[out[i].Role] < order[out[j].Role]
		}
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Since.Before(out[j].Since)
	})
	acct := sp.cfg.Account.State()
	return Status{Version: sp.cfg.Version, Now: now, Started: sp.cfg.Started,
		UptimeSeconds: math.Round(now.Sub(sp.cfg.Started).Seconds()*10) / 10, Account: acct, Connections: out}
}

// connStatus reads one connection's state and counters.
func connStatus(s *Stats, redact func(string) string) ConnStatus {
	s.mu.Lock()
	cs := ConnStatus{Role: s.Role, Name: s.Name, Connected: s.connected, Since: s.since,
		LastError: redact(s.lastErr), Disconnects: s.downs, Waiting: s.waiting, PingRTTSeconds: s.rtt.Seconds()}
	if s.downs > 0 {
		cs.LastReason = s.lastDown.String()
	}
	s.mu.Unlock()
	m := s.M
	if s.Role == RoleUpstream {
		cs.Events = counterValue(m.FramesIn[onebot.KindEvent])
	} else {
		cs.Events = counterValue(m.FramesOut[onebot.KindEvent])
	}
	for i, c := range m.Dropped {
		if v := counterValue(c); v > 0 {
			if cs.DroppedBy == nil {
				cs.DroppedBy = map[string]float64{}
			}
			cs.DroppedBy[Drop(i).String()] = v
			cs.Dropped += v
		}
	}
	// When obmux_filtered_events_total lands in ConnMetrics:
	// cs.Filtered = new(counterValue(m.Filtered))
	cs.API = APIStatus{OK: counterValue(m.API[OutcomeOK]), Failed: counterValue(m.API[OutcomeFailed]),
		Timeout: counterValue(m.API[OutcomeTimeout]), UpstreamDown: counterValue(m.API[OutcomeUpstreamDown]),
		Forbidden: counterValue(m.API[OutcomeForbidden])}
	cs.API.AvgSeconds, cs.API.P99Seconds = latency(m.APIDuration)
	cs.Replayed = counterValue(m.Replayed)
	cs.ReplayLost = counterValue(m.ReplayLost)
	return cs
}

// counterValue reads a counter's value.
func counterValue(c prometheus.Counter) float64 {
	if v, ok := c.(interface{ Value() float64 }); ok {
		return v.Value()
	}
	var m dto.Metric
	if c == nil || c.Write(&m) != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// latency returns the mean of a histogram and the upper bound of the bucket
// that holds its 99th percentile (the largest finite bound when it is past
// them all), both 0 before the first observation.
func latency(o prometheus.Observer) (avg, p99 float64) {
	h, ok := o.(prometheus.Metric)
	var m dto.Metric
	if !ok || h.Write(&m) != nil || m.GetHistogram().GetSampleCount() == 0 {
		return 0, 0
	}
	hist := m.GetHistogram()
	n := float64(hist.GetSampleCount())
	avg = hist.GetSampleSum() / n
	for _, b := range hist.GetBucket() {
		p99 = b.GetUpperBound()
		if float64(b.GetCumulativeCount()) >= 0.99*n {
			break
		}
	}
	return avg, p99
}

// CollectorValues returns a function that collects c, a collector of
// gauges with a label called label (obmux_queue_length and its name), and
// returns the value of each label value, summed.
func CollectorValues(c prometheus.Collector, label string) func() map[string]float64 {
	return func() map[string]float64 {
		ch := make(chan prometheus.Metric, 16)
		go func() { c.Collect(ch); close(ch) }()
		out := map[string]float64{}
		for metric := range ch {
			var m dto.Metric
			if metric.Write(&m) != nil {
				continue
			}
			for _, lp := range m.GetLabel() {
				if lp.GetName() == label {
					out[lp.GetValue()] += m.GetGauge().GetValue() + m.GetCounter().GetValue()
				}
			}
		}
		return out
	}
}
