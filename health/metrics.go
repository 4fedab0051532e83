package health

import (
	"errors"
	"runtime"

	"github.com/obmux/obmux/onebot"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Role says which side of obmux a connection is on; it is the "role" label.
type Role string

// The roles of the connections obmux holds.
const (
	RoleUpstream Role = "upstream"
	RoleTarget   Role = "target"
	RoleClient   Role = "client"
	// RoleNATS is the callers of the API over NATS request/reply.
	RoleNATS Role = "nats"
)

// Reason says why a connection ended: the obmux_disconnects_total "reason"
// label.
type Reason uint8

// Disconnect reasons.
const (
	ReasonClosedByPeer Reason = iota
	ReasonKeepaliveTimeout
	ReasonReadError
	ReasonWriteError
	ReasonQueueOverflow
	ReasonShutdown
	ReasonReplaced
	ReasonSelfIDChanged
	numReasons
)

var reasonNames = [numReasons]string{"closed_by_peer", "keepalive_timeout", "read_error", "write_error", "queue_overflow", "shutdown",
	"replaced", "self_id_changed"}

func (r Reason) String() string { return reasonNames[r] }

// Drop says why a frame was dropped: the obmux_dropped_frames_total "reason"
// label.
type Drop uint8

// Drop reasons.
const (
	// DropQueueFull is an API frame (call, response or obmux's own answer)
	// for a connection whose Send queue is full.
	DropQueueFull Drop = iota
	// DropOldest is an event a peer lost to OBMUX_SLOW_TARGET=drop_oldest.
	DropOldest
	// DropTargetGone is a frame for a connection that had ended, or a
	// response no caller waits for.
	DropTargetGone
	// DropOversized is a message over OBMUX_MAX_MESSAGE_BYTES.
	DropOversized
	// DropInvalid is a frame that is not OneBot, or not one that side may
	// send.
	DropInvalid
	// DropDisconnected is a frame still queued when its connection ended.
	DropDisconnected
	// DropInvalidUTF8 is a text message that is not valid UTF-8.
	DropInvalidUTF8
	numDrops
)

var dropNames = [numDrops]string{"queue_full", "dropped_oldest", "target_gone", "oversized", "invalid", "disconnected", "invalid_utf8"}

func (d Drop) String() string { return dropNames[d] }

// InvalidDrop is the drop reason of a frame onebot.Classify refused with
// err: invalid_utf8 for invalid UTF-8, invalid for anything else.
func InvalidDrop(err error) Drop {
	if errors.Is(err, onebot.ErrInvalidUTF8) {
		return DropInvalidUTF8
	}
	return DropInvalid
}

// Outcome is how an API call ended: the obmux_api_requests_total "outcome"
// label.
type Outcome uint8

// API call outcomes.
const (
	OutcomeOK Outcome = iota
	OutcomeFailed
	OutcomeTimeout
	OutcomeUpstreamDown
	OutcomeForbidden
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "failed", "timeout", "upstream_down", "forbidden"}

func (o Outcome) String() string { return outcomeNames[o] }

// Metrics holds every obmux metric, registered on the registry handed to
// NewMetrics. Per-connection children are bound once, in Track, so that the
// per-frame path never looks a label up.
type Metrics struct {
	up          *prometheus.GaugeVec
	connects    *prometheus.CounterVec
	disconnects *prometheus.CounterVec
	frames      *prometheus.CounterVec
	bytes       *prometheus.CounterVec
	dropped     *prometheus.CounterVec
	apiRequests *prometheus.CounterVec
	apiDuration *prometheus.HistogramVec
	pingRTT     *prometheus.GaugeVec
	heartbeats  *prometheus.CounterVec
	replayed    *prometheus.CounterVec
	replayLost  *prometheus.CounterVec
	filtered    *prometheus.CounterVec
	sendQueue   *prometheus.GaugeVec
	sendWait    *prometheus.HistogramVec
	unconverted *prometheus.CounterVec
	lastEvent   prometheus.Gauge
}

// NewMetrics creates obmux's metrics and registers them, with the Go and
// process collectors and obmux_build_info, on reg. A nil reg registers
// nothing, which suits tests that do not read metrics.
func NewMetrics(reg prometheus.Registerer, version string) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	rn := []string{"role", "name"}
	m := &Metrics{
		up: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "obmux_connection_up",
			Help: "1 while the connection is up (for forward-WS clients: how many are connected on that path)."}, rn),
		connects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_connects_total",
			Help: "Successful connects."}, rn),
		disconnects: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_disconnects_total",
			Help: "Connections that ended, by reason."}, []string{"role", "name", "reason"}),
		frames: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_frames_total",
			Help: "WebSocket messages read (in) and written (out), by OneBot frame kind."}, []string{"role", "name", "direction", "kind"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_bytes_total",
			Help: "WebSocket message payload bytes read (in) and written (out)."}, []string{"role", "name", "direction"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_dropped_frames_total",
			Help: "Frames obmux did not deliver, by reason."}, []string{"name", "reason"}),
		apiRequests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_api_requests_total",
			Help: "API calls made through obmux, by outcome."}, []string{"name", "outcome"}),
		apiDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "obmux_api_request_duration_seconds",
			Help:    "Time from a caller's API request to its response being queued for it.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}, []string{"name"}),
		pingRTT: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "obmux_ping_rtt_seconds",
			Help: "Last WebSocket keepalive round trip."}, rn),
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_heartbeats_sent_total",
			Help: "OneBot heartbeat meta events sent by obmux."}, rn),
		replayed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_replayed_events_total",
			Help: "Events a target missed while away and received after it reconnected."}, []string{"name"}),
		replayLost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_replay_lost_total",
			Help: "Events a target missed that were no longer in the replay buffer (too many or too old)."}, []string{"name"}),
		filtered: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_filtered_events_total",
			Help: "Upstream events a bot's policy held back from it (GROUPS, GROUPS_DENY, USERS_DENY, FILTER, SELF_MESSAGES)."}, []string{"name"}),
		sendQueue: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "obmux_send_queue_length",
			Help: "Sends of a caller waiting for the account-wide send rate limit (OBMUX_SEND_RATE)."}, []string{"name"}),
		sendWait: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "obmux_send_wait_seconds",
			Help:    "Time a caller's send waited for the account-wide send rate limit (OBMUX_SEND_RATE), until it was sent or left the queue.",
			Buckets: []float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}}, []string{"name"}),
		unconverted: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_unconverted_messages_total",
			Help: "Events and get_msg/get_forward_msg responses a bot got in the upstream's message format instead of its MESSAGE_FORMAT: the message could not be converted."}, []string{"name"}),
		lastEvent: prometheus.NewGauge(prometheus.GaugeOpts{Name: "obmux_upstream_last_event_timestamp_seconds",
			Help: "Unix time of the last event read from the upstream."}),
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "obmux_build_info",
		Help: "Always 1; the labels say which obmux this is."}, []string{"version", "goversion"})
	build.WithLabelValues(version, runtime.Version()).Set(1)
	reg.MustRegister(m.up, m.connects, m.disconnects, m.frames, m.bytes, m.dropped, m.apiRequests,
		m.apiDuration, m.pingRTT, m.heartbeats, m.replayed, m.replayLost, m.filtered, m.sendQueue, m.sendWait, m.unconverted, m.lastEvent, build,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// LastEvent returns the gauge of the last upstream event's time.
func (m *Metrics) LastEvent() prometheus.Gauge { return m.lastEvent }

// ConnMetrics are the metric children of one (role, name), bound once.
type ConnMetrics struct {
	Up          prometheus.Gauge
	Connects    prometheus.Counter
	Disconnects [numReasons]prometheus.Counter
	FramesIn    [onebot.NumKinds]prometheus.Counter
	FramesOut   [onebot.NumKinds]prometheus.Counter
	BytesIn     prometheus.Counter
	BytesOut    prometheus.Counter
	Dropped     [numDrops]prometheus.Counter
	API         [numOutcomes]prometheus.Counter
	APIDuration prometheus.Observer
	PingRTT     prometheus.Gauge
	Heartbeats  prometheus.Counter
	Replayed    prometheus.Counter
	ReplayLost  prometheus.Counter
	Filtered    prometheus.Counter
	// SendQueue and SendWait are the caller's sends waiting for the send
	// rate limit, and how long each waited.
	SendQueue   prometheus.Gauge
	SendWait    prometheus.Observer
	Unconverted prometheus.Counter
}

// Conn binds the children of role and name.
func (m *Metrics) Conn(role Role, name string) *ConnMetrics {
	r := string(role)
	c := &ConnMetrics{
		Up:          m.up.WithLabelValues(r, name),
		Connects:    m.connects.WithLabelValues(r, name),
		BytesIn:     m.bytes.WithLabelValues(r, name, "in"),
		BytesOut:    m.bytes.WithLabelValues(r, name, "out"),
		APIDuration: m.apiDuration.WithLabelValues(name),
		PingRTT:     m.pingRTT.WithLabelValues(r, name),
		Heartbeats:  m.heartbeats.WithLabelValues(r, name),
		Replayed:    m.replayed.WithLabelValues(name),
		ReplayLost:  m.replayLost.WithLabelValues(name),
		Filtered:    m.filtered.WithLabelValues(name),
		SendQueue:   m.sendQueue.WithLabelValues(name),
		SendWait:    m.sendWait.WithLabelValues(name),
		Unconverted: m.unconverted.WithLabelValues(name),
	}
	for i := range c.Disconnects {
		c.Disconnects[i] = m.disconnects.WithLabelValues(r, name, Reason(i).String())
	}
	for i := range c.FramesIn {
		c.FramesIn[i] = m.frames.WithLabelValues(r, name, "in", onebot.Kind(i).String())
		c.FramesOut[i] = m.frames.WithLabelValues(r, name, "out", onebot.Kind(i).String())
	}
	for i := range c.Dropped {
		c.Dropped[i] = m.dropped.WithLabelValues(name, Drop(i).String())
	}
	for i := range c.API {
		c.API[i] = m.apiRequests.WithLabelValues(name, Outcome(i).String())
	}
	return c
}
