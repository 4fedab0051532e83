package natsbus

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the account side's NATS metrics.
type Metrics struct {
	connected prometheus.Gauge
	published prometheus.Counter
	errors    prometheus.Counter
	dropped   *prometheus.CounterVec
	// The children of dropped, bound once.
	droppedFull, droppedLarge prometheus.Counter
}

// Why an event was not published: the reason label of obmux_nats_dropped_total.
const (
	dropBufferFull = "buffer_full" // NATS away longer than the buffer holds
	dropTooLarge   = "too_large"   // larger than the server's max_payload
)

// NewMetrics registers the NATS metrics on reg. The buffer gauges are
// registered by the Publisher that owns the buffer.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		connected: prometheus.NewGauge(prometheus.GaugeOpts{Name: "obmux_nats_connected",
			Help: "1 while obmux is connected to a NATS server."}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "obmux_nats_published_total",
			Help: "Events and status changes stored by JetStream (acknowledged)."}),
		errors: prometheus.NewCounter(prometheus.CounterOpts{Name: "obmux_nats_publish_errors_total",
			Help: "Publishes that failed (NATS away, no acknowledgement in time, stream missing); they are published again."}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_nats_dropped_total",
			Help: "Events not published, by reason: buffer_full (NATS away longer than OBMUX_NATS_BUFFER_BYTES holds), too_large (over the server's max_payload)."},
			[]string{"reason"}),
	}
	m.droppedFull = m.dropped.WithLabelValues(dropBufferFull)
	m.droppedLarge = m.dropped.WithLabelValues(dropTooLarge)
	reg.MustRegister(m.connected, m.published, m.errors, m.dropped)
	return m
}
