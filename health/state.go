package health

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"
)

// Monitor tracks every connection obmux holds, for the health endpoints and
// the metrics. It is safe for concurrent use.
type Monitor struct {
	// Redact, if set before the monitor is used, is applied to every error
	// text it keeps, so that /readyz, /healthz, the status page and
	// notifications never show a URL's query or userinfo.
	Redact func(string) string

	metrics *Metrics
	mu      sync.Mutex
	conns   map[*Stats]struct{}
	bound   map[string]*ConnMetrics
}

// NewMonitor returns a Monitor that reports through m.
func NewMonitor(m *Metrics) *Monitor {
	return &Monitor{metrics: m, conns: map[*Stats]struct{}{}, bound: map[string]*ConnMetrics{}}
}

// Metrics returns the metrics the monitor reports through.
func (mon *Monitor) Metrics() *Metrics { return mon.metrics }

// Track starts tracking a connection of role and name; call Stats.Untrack
// when it is gone for good. Connections that share a role and name (forward
// clients on one path) share their metric children.
func (mon *Monitor) Track(role Role, name string) *Stats {
	mon.mu.Lock()
	defer mon.mu.Unlock()
	key := string(role) + "\x00" + name
	cm := mon.bound[key]
	if cm == nil {
		cm = mon.metrics.Conn(role, name)
		mon.bound[key] = cm
	}
	s := &Stats{M: cm, Role: role, Name: name, mon: mon}
	mon.conns[s] = struct{}{}
	return s
}

// Stats is the state and the metrics of one tracked connection.
type Stats struct {
	// M are the connection's bound metric children.
	M    *ConnMetrics
	Role Role
	Name string

	mon       *Monitor
	mu        sync.Mutex
	connected bool
	since     time.Time
	lastErr   string
	rtt       time.Duration
	// lastDown is why the connection last ended, for the status page;
	// downs counts the ends.
	lastDown Reason
	downs    int
	// waiting says why a connection that is not up is not being dialed
	// ("" when it is, or is up).
	waiting string
}

// Waiting records why the connection is not being dialed ("" once it is).
func (s *Stats) Waiting(why string) {
	s.mu.Lock()
	s.waiting = why
	s.mu.Unlock()
}

// Up records that the connection is established.
func (s *Stats) Up() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.connected {
		return
	}
	s.connected, s.since = true, time.Now()
	s.M.Up.Inc()
	s.M.Connects.Inc()
}

// Down records that the connection ended for reason, with err as its last
// error (nil for none).
func (s *Stats) Down(reason Reason, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err != nil {
		s.lastErr = s.mon.errText(err)
	}
	if !s.connected {
		return
	}
	s.connected, s.since = false, time.Now()
	s.lastDown, s.downs = reason, s.downs+1
	s.M.Up.Dec()
	s.M.Disconnects[reason].Inc()
}

// Failed records err as the last error of a connection that is not up, such
// as a failed dial.
func (s *Stats) Failed(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastErr = s.mon.errText(err)
	if s.since.IsZero() {
		s.since = time.Now()
	}
}

// errText is err's text as the monitor keeps it: redacted.
func (mon *Monitor) errText(err error) string {
	if mon.Redact == nil {
		return err.Error()
	}
	return mon.Redact(err.Error())
}

// RTT records a keepalive round trip.
func (s *Stats) RTT(d time.Duration) {
	s.mu.Lock()
	s.rtt = d
	s.mu.Unlock()
	s.M.PingRTT.Set(d.Seconds())
}

// Untrack removes the connection from the health endpoints.
func (s *Stats) Untrack() {
	s.mon.mu.Lock()
	delete(s.mon.conns, s)
	s.mon.mu.Unlock()
}

// ConnState is one connection as the health endpoints report it.
type ConnState struct {
	Role      Role      `json:"role"`
	Name      string    `json:"name"`
	Connected bool      `json:"connected"`
	Since     time.Time `json:"since,omitzero"`
	LastError string    `json:"last_error,omitempty"`
	// Waiting says why a connection that is not up is not being dialed,
	// such as "waiting for the upstream: self_id unknown".
	Waiting string `json:"waiting,omitempty"`
	// PingRTTSeconds is the last keepalive round trip, 0 before the first.
	PingRTTSeconds float64 `json:"ping_rtt_seconds"`
}

// Snapshot returns the state of every tracked connection, upstream first,
// then by role and name.
func (mon *Monitor) Snapshot() []ConnState {
	mon.mu.Lock()
	out := make([]ConnState, 0, len(mon.conns))
	for s := range mon.conns {
		s.mu.Lock()
		out = append(out, ConnState{Role: s.Role, Name: s.Name, Connected: s.connected, Since: s.since,
			LastError: s.lastErr, Waiting: s.waiting, PingRTTSeconds: s.rtt.Seconds()})
		s.mu.Unlock()
	}
	mon.mu.Unlock()
	order := map[Role]int{RoleUpstream: 0, RoleTarget: 1, RoleClient: 2}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Role != out[j].Role {
			return order[out[i].Role] < order[out[j].Role]
		}
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Since.Before(out[j].Since)
	})
	return out
}

// Health is the document GET /healthz and GET /readyz serve.
type Health struct {
	// Status is "ok", or "degraded" while any target is down (the HTTP
	// status stays 200: it is about obmux and its upstream), or, on
	// /readyz, "unavailable" (HTTP 503) while the upstream is not ready.
	Status string `json:"status"`
	// TargetsConnected is "N of M": targets up of targets configured;
	// TargetsUp and TargetsTotal are the same as numbers.
	TargetsConnected string      `json:"targets_connected"`
	TargetsUp        int         `json:"targets_up"`
	TargetsTotal     int         `json:"targets_total"`
	Connections      []ConnState `json:"connections"`
}

// Health returns the state of every connection and how many targets are up.
func (mon *Monitor) Health() Health {
	h := Health{Status: "ok", Connections: mon.Snapshot()}
	for _, c := range h.Connections {
		if c.Role == RoleTarget {
			h.TargetsTotal++
			if c.Connected {
				h.TargetsUp++
			}
		}
	}
	h.TargetsConnected = fmt.Sprintf("%d of %d", h.TargetsUp, h.TargetsTotal)
	if h.TargetsUp < h.TargetsTotal {
		h.Status = "degraded"
	}
	return h
}

// Handler serves GET /healthz (200 while the process serves) and GET
// /readyz (200 when ready reports true, else 503), both a Health document,
// and metrics (if not nil) on /metrics.
func (mon *Monitor) Handler(ready func() bool, metrics http.Handler) http.Handler {
	mux := http.NewServeMux()
	write := func(w http.ResponseWriter, h Health, code int) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(h)
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { write(w, mon.Health(), http.StatusOK) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		h, code := mon.Health(), http.StatusOK
		if !ready() {
			h.Status, code = "unavailable", http.StatusServiceUnavailable
		}
		write(w, h, code)
	})
	if metrics != nil {
		mux.Handle("GET /metrics", metrics)
	}
	return mux
}
