package health

import (
	"errors"
	"fmt"
	"runtime"
	"sync"

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
	// Every per-connection metric has compact children (see family).
	up          *family
	connects    *family
	disconnects *family
	frames      *family
	bytes       *family
	dropped     *family
	apiRequests *family
	apiDuration *histFamily
	pingRTT     *family
	heartbeats  *family
	replayed    *family
	replayLost  *family
	filtered    *family
	sendQueue   *family
	sendWait    *histFamily
	unconverted *family
	lastEvent   prometheus.Gauge

	// The children bound, by (role, name) and, for the families labelled
	// by name alone, by name: connections with the same labels share them,
	// as the children of a client_golang vector do.
	mu     sync.Mutex
	conns  map[conn]*ConnMetrics
	byName map[string]*ConnMetrics
}

// values returns the names of n values of a label (String of each index).
func values[T ~uint8](n T) [][]string {
	out := make([][]string, n)
	for i := range n {
		out[i] = []string{any(i).(fmt.Stringer).String()}
	}
	return out
}

// frameLabels are the direction and kind values of obmux_frames_total's
// children, in ConnMetrics' order: every kind in, then every kind out.
func frameLabels() [][]string {
	var out [][]string
	for _, dir := range []string{"in", "out"} {
		for k := range onebot.NumKinds {
			out = append(out, []string{dir, k.String()})
		}
	}
	return out
}

// NewMetrics creates obmux's metrics and registers them, with the Go and
// process collectors and obmux_build_info, on reg. A nil reg registers
// nothing, which suits tests that do not read metrics.
func NewMetrics(reg prometheus.Registerer, version string) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	const counter, gauge = prometheus.CounterValue, prometheus.GaugeValue
	m := &Metrics{
		up: newFamily("obmux_connection_up",
			"1 while the connection is up (for forward-WS clients: how many are connected on that path).", gauge, true, nil, nil),
		connects: newFamily("obmux_connects_total", "Successful connects.", counter, true, nil, nil),
		disconnects: newFamily("obmux_disconnects_total", "Connections that ended, by reason.", counter, true,
			[]string{"reason"}, values(numReasons)),
		frames: newFamily("obmux_frames_total", "WebSocket messages read (in) and written (out), by OneBot frame kind.", counter, true,
			[]string{"direction", "kind"}, frameLabels()),
		bytes: newFamily("obmux_bytes_total", "WebSocket message payload bytes read (in) and written (out).", counter, true,
			[]string{"direction"}, [][]string{{"in"}, {"out"}}),
		dropped: newFamily("obmux_dropped_frames_total", "Frames obmux did not deliver, by reason.", counter, false,
			[]string{"reason"}, values(numDrops)),
		apiRequests: newFamily("obmux_api_requests_total", "API calls made through obmux, by outcome.", counter, false,
			[]string{"outcome"}, values(numOutcomes)),
		apiDuration: newHistFamily("obmux_api_request_duration_seconds",
			"Time from a caller's API request to its response being queued for it.",
			[]float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}),
		pingRTT:    newFamily("obmux_ping_rtt_seconds", "Last WebSocket keepalive round trip.", gauge, true, nil, nil),
		heartbeats: newFamily("obmux_heartbeats_sent_total", "OneBot heartbeat meta events sent by obmux.", counter, true, nil, nil),
		replayed: newFamily("obmux_replayed_events_total",
			"Events a target missed while away and received after it reconnected.", counter, false, nil, nil),
		replayLost: newFamily("obmux_replay_lost_total",
			"Events a target missed that were no longer in the replay buffer (too many or too old).", counter, false, nil, nil),
		filtered: newFamily("obmux_filtered_events_total",
			"Upstream events a bot's policy held back from it (GROUPS, GROUPS_DENY, USERS_DENY, FILTER, SELF_MESSAGES).", counter, false, nil, nil),
		sendQueue: newFamily("obmux_send_queue_length",
			"Sends of a caller waiting for the account-wide send rate limit (OBMUX_SEND_RATE).", gauge, false, nil, nil),
		sendWait: newHistFamily("obmux_send_wait_seconds",
			"Time a caller's send waited for the account-wide send rate limit (OBMUX_SEND_RATE), until it was sent or left the queue.",
			[]float64{.01, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300}),
		unconverted: newFamily("obmux_unconverted_messages_total",
			"Events and get_msg/get_forward_msg responses a bot got in the upstream's message format instead of its MESSAGE_FORMAT: the message could not be converted.", counter, false, nil, nil),
		lastEvent: prometheus.NewGauge(prometheus.GaugeOpts{Name: "obmux_upstream_last_event_timestamp_seconds",
			Help: "Unix time of the last event read from the upstream."}),
		conns: map[conn]*ConnMetrics{}, byName: map[string]*ConnMetrics{},
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

// Conn returns the children of role and name, bound on the first call.
func (m *Metrics) Conn(role Role, name string) *ConnMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	key := conn{string(role), name}
	if c := m.conns[key]; c != nil {
		return c
	}
	id := &key
	c := &ConnMetrics{
		Up:         gauge{&m.up.bind(id)[0]},
		Connects:   &m.connects.bind(id)[0],
		PingRTT:    gauge{&m.pingRTT.bind(id)[0]},
		Heartbeats: &m.heartbeats.bind(id)[0],
	}
	bytes := m.bytes.bind(id)
	c.BytesIn, c.BytesOut = &bytes[0], &bytes[1]
	disconnects := m.disconnects.bind(id)
	for i := range disconnects {
		c.Disconnects[i] = &disconnects[i]
	}
	frames := m.frames.bind(id)
	for i := range c.FramesIn {
		c.FramesIn[i], c.FramesOut[i] = &frames[i], &frames[int(onebot.NumKinds)+i]
	}
	if n := m.byName[name]; n != nil {
		c.shareByName(n)
	} else {
		m.bindByName(c, id)
		m.byName[name] = c
	}
	m.conns[key] = c
	return c
}

// bindByName binds c's children of the families labelled by name alone.
func (m *Metrics) bindByName(c *ConnMetrics, id *conn) {
	c.APIDuration = m.apiDuration.bind(id.name)
	c.SendWait = m.sendWait.bind(id.name)
	c.Replayed = &m.replayed.bind(id)[0]
	c.ReplayLost = &m.replayLost.bind(id)[0]
	c.Filtered = &m.filtered.bind(id)[0]
	c.SendQueue = gauge{&m.sendQueue.bind(id)[0]}
	c.Unconverted = &m.unconverted.bind(id)[0]
	dropped := m.dropped.bind(id)
	for i := range dropped {
		c.Dropped[i] = &dropped[i]
	}
	apiRequests := m.apiRequests.bind(id)
	for i := range apiRequests {
		c.API[i] = &apiRequests[i]
	}
}

// shareByName gives c the children of n's name in the families labelled
// by name alone.
func (c *ConnMetrics) shareByName(n *ConnMetrics) {
	c.APIDuration, c.SendWait = n.APIDuration, n.SendWait
	c.Replayed, c.ReplayLost, c.Filtered, c.SendQueue, c.Unconverted = n.Replayed, n.ReplayLost, n.Filtered, n.SendQueue, n.Unconverted
	c.Dropped, c.API = n.Dropped, n.API
}
