package fanout

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/onebot"
	"github.com/obmux/obmux/policy"
	"github.com/obmux/obmux/wsconn"
)

// ServerConfig configures the forward-WS server.
type ServerConfig struct {
	// Token, when set, is required from clients (Bearer header or
	// access_token query): 401 when missing, 403 when wrong.
	Token string
	// APIHeartbeat sends heartbeats on /api too (most implementations don't).
	APIHeartbeat bool
	// Policy is what every client gets and may do.
	Policy policy.Policy
	// MaxClients bounds the clients connected at once (0: no bound); one
	// more is refused with 503 before the upgrade and counted in Refused.
	MaxClients int
	Refused    prometheus.Counter
	// Refusals, if not nil, counts and logs the clients refused for their
	// token or path.
	Refusals *health.Refusals
}

// Server is obmux's forward-WS server: it serves clients as a correct OneBot
// v11 implementation would, on "/" (events and API), "/event" (events only)
// and "/api" (API only), each path also with a trailing slash.
type Server struct {
	hub *Hub
	cfg ServerConfig

	mu      sync.Mutex
	clients int    // connected, or being upgraded
	full    bool   // refusing: logged once until a client fits again
	refused uint64 // since full
}

// NewServer returns the forward-WS server of h.
func (h *Hub) NewServer(cfg ServerConfig) *Server { return &Server{hub: h, cfg: cfg} }

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if len(path) > 1 {
		path = strings.TrimSuffix(path, "/")
	}
	var o serveOpts
	switch path {
	case "/":
		o = serveOpts{events: true, api: true, heartbeat: true}
	case "/event":
		o = serveOpts{events: true, heartbeat: true}
	case "/api":
		o = serveOpts{api: true, heartbeat: s.cfg.APIHeartbeat}
	default:
		s.cfg.Refusals.Refuse(s.hub.log, health.ListenerForward, health.RefusedWrongPath, r, "forward client on a wrong path (HTTP 404)",
			"hint", "obmux's forward-WS endpoints are /, /event and /api on OBMUX_FORWARD_LISTEN")
		http.Error(w, "not a OneBot endpoint: use /, /event or /api", http.StatusNotFound)
		return
	}
	if code := onebot.Authorize(r, s.cfg.Token); code != 0 {
		s.cfg.Refusals.Refuse(s.hub.log, health.ListenerForward, health.RefusalForStatus(code), r, "forward client refused",
			"status", code, "hint", "clients must send OBMUX_FORWARD_TOKEN as Authorization: Bearer or ?access_token=")
		http.Error(w, http.StatusText(code), code)
		return
	}
	st, _ := s.hub.up.State()
	if st.SelfID == 0 {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "the upstream has not connected yet (self_id unknown)", http.StatusServiceUnavailable)
		return
	}
	o.selfID, o.policy = st.SelfID, &s.cfg.Policy
	if !s.admit(r) {
		w.Header().Set("Retry-After", "5")
		http.Error(w, fmt.Sprintf("obmux serves at most %d forward clients at once (OBMUX_FORWARD_MAX_CLIENTS): try again later", s.cfg.MaxClients),
			http.StatusServiceUnavailable)
		return
	}
	defer s.leave()
	ws, raw, err := wsconn.Accept(w, r)
	if err != nil {
		s.cfg.Refusals.Refuse(s.hub.log, health.ListenerForward, health.RefusedHandshake, r, "forward client refused: not a WebSocket handshake",
			"error", err)
		return
	}
	stats := s.hub.mon.Track(health.RoleClient, path)
	defer stats.Untrack()
	log := s.hub.log.With("role", "client", "name", path, "remote", r.RemoteAddr)
	log.Info("client connected")
	end, _ := s.hub.serve(context.WithoutCancel(r.Context()), ws, raw, stats, o)
	log.Info("client disconnected", "reason", end.Reason.String(), "error", end.Err)
}

// admit counts one more client, or reports false when MaxClients are
// connected; the first refusal of a run is logged, and so is its end.
func (s *Server) admit(r *http.Request) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cfg.MaxClients > 0 && s.clients >= s.cfg.MaxClients {
		if s.cfg.Refused != nil {
			s.cfg.Refused.Inc()
		}
		s.refused++
		if !s.full {
			s.full = true
			s.hub.log.Warn("forward client refused with 503: OBMUX_FORWARD_MAX_CLIENTS clients are connected (further refusals are counted, not logged, until one fits)",
				"max_clients", s.cfg.MaxClients, "remote", r.RemoteAddr,
				"hint", "raise OBMUX_FORWARD_MAX_CLIENTS if these are your bots; obmux_forward_clients_refused_total counts every refusal")
		}
		return false
	}
	s.clients++
	if s.full {
		s.full = false
		s.hub.log.Info("forward clients fit under OBMUX_FORWARD_MAX_CLIENTS again", "max_clients", s.cfg.MaxClients, "refused", s.refused)
		s.refused = 0
	}
	return true
}

// leave counts a client gone.
func (s *Server) leave() {
	s.mu.Lock()
	s.clients--
	s.mu.Unlock()
}

// QueueCollector returns the collector of obmux_queue_length: how many
// events wait for each peer, read when scraped, so broadcasting costs
// nothing for it.
func (h *Hub) QueueCollector() prometheus.Collector { return queueCollector{h} }

type queueCollector struct{ h *Hub }

var queueDesc = prometheus.NewDesc("obmux_queue_length", "Events waiting to be written to a target (or to the clients on a path).", []string{"name"}, nil)

func (q queueCollector) Describe(ch chan<- *prometheus.Desc) { ch <- queueDesc }

func (q queueCollector) Collect(ch chan<- prometheus.Metric) {
	h := q.h
	sums := map[string]float64{}
	h.mu.Lock()
	for c := range h.cursors {
		sums[c.stats.Name] += float64(h.ring.next - max(c.next, h.ring.first))
	}
	h.mu.Unlock()
	for name, n := range sums {
		ch <- prometheus.MustNewConstMetric(queueDesc, prometheus.GaugeValue, n, name)
	}
}
