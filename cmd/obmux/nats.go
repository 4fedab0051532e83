package main

import (
	"context"
	"log/slog"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/obmux/obmux/config"
	"github.com/obmux/obmux/fanout"
	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/natsbus"
	"github.com/obmux/obmux/policy"
	"github.com/obmux/obmux/proxy"
)

// natsMaxInflight bounds the publishes awaiting JetStream's acknowledgement.
const natsMaxInflight = 256

// natsBus is the account side of the NATS backbone: the publisher of the
// upstream's events and the API served over request/reply.
type natsBus struct {
	nc  *nats.Conn
	pub *natsbus.Publisher
	api *natsbus.API
	log *slog.Logger
}

// newNATSBus connects to NATS when OBMUX_NATS_URL is set (nil when not).
func newNATSBus(cfg config.Config, router *proxy.Router, acct *health.Account, mon *health.Monitor,
	reg prometheus.Registerer, log *slog.Logger) (*natsBus, error) {
	if cfg.NATSURL == "" {
		return nil, nil
	}
	log = log.With("component", "nats")
	m := natsbus.NewMetrics(reg)
	name := "obmux"
	if cfg.SelfID != 0 {
		name += " " + strconv.FormatInt(cfg.SelfID, 10)
	}
	nc, err := natsbus.Connect(natsbus.ConnConfig{URL: cfg.NATSURL, Creds: cfg.NATSCreds, Token: cfg.NATSToken, Name: name}, m, log)
	if err != nil {
		return nil, err
	}
	pub, err := natsbus.NewPublisher(nc, natsbus.PublisherConfig{Stream: cfg.NATSStream, MaxAge: cfg.NATSMaxAge,
		MaxBytes: cfg.NATSMaxBytes, BufferBytes: cfg.NATSBufferBytes, BufferEvents: max(cfg.ReplaySize, cfg.QueueSize),
		MaxInflight: natsMaxInflight, AckTimeout: 5 * time.Second, Retry: time.Second, Account: acct}, m, reg, log)
	if err != nil {
		nc.Close()
		return nil, err
	}
	named := map[string]policy.ACL{}
	for name, p := range cfg.NATSNamed {
		named[name] = p.API
	}
	api := natsbus.NewAPI(nc, router, cfg.NATSCallers.API, named, acct, mon, cfg.APIMaxInflight, log)
	return &natsBus{nc: nc, pub: pub, api: api, log: log}, nil
}

// sink puts the publisher beside the hub on the upstream's event path.
func (b *natsBus) sink(hub proxy.Sink) proxy.Sink {
	if b == nil {
		return hub
	}
	return teeSink{Sink: hub, pub: b.pub}
}

// run publishes and serves the API until ctx is done.
func (b *natsBus) run(ctx context.Context) {
	if b == nil {
		return
	}
	var wg sync.WaitGroup
	wg.Go(func() { b.pub.Run(ctx) })
	wg.Go(func() { b.api.Run(ctx) })
	wg.Wait()
}

// stopAPI stops serving NATS API requests, first thing at shutdown.
func (b *natsBus) stopAPI() {
	if b != nil {
		b.api.Stop()
	}
}

// flush waits, once the upstream is closed, until JetStream took every
// buffered event or ctx is done.
func (b *natsBus) flush(ctx context.Context) {
	if b == nil {
		return
	}
	select {
	case <-b.pub.Flushed():
	case <-ctx.Done():
		n, _, _ := b.pub.Buffered()
		b.log.Warn("shutdown: events not published to NATS", "events", n)
	}
}

// close closes the NATS connection, after run returned.
func (b *natsBus) close() {
	if b != nil {
		b.nc.Close()
	}
}

// teeSink hands every upstream event to the hub, then to the publisher
// (which never blocks).
type teeSink struct {
	proxy.Sink
	pub *natsbus.Publisher
}

func (t teeSink) Event(b []byte) {
	t.Sink.Event(b)
	t.pub.Event(b)
}

// close closes the NATS connections, once every goroutine that uses them
// is gone.
func (sc *sidecar) close() {
	sc.bus.close()
	if sc.edgeConn != nil {
		sc.edgeConn()
	}
}

// upstreamSide is where the events come from: the OneBot implementation
// (proxy.Upstream) or, on an edge, the NATS stream (natsbus.Edge).
type upstreamSide interface {
	Run(ctx context.Context)
	Close(ctx context.Context)
	Ready() bool
}

// newEdge connects an edge (OBMUX_UPSTREAM_URL=nats://) to NATS; disconnect
// closes the connection once nothing uses it.
func newEdge(cfg config.Config, state *proxy.UpstreamState, router *proxy.Router, hub *fanout.Hub, acct *health.Account,
	mon *health.Monitor, reg prometheus.Registerer, log *slog.Logger) (*natsbus.Edge, func(), error) {
	log = log.With("component", "nats")
	consumer := natsConsumer(cfg)
	nc, err := natsbus.Connect(natsbus.ConnConfig{URL: cfg.UpstreamURL, Creds: cfg.NATSCreds, Token: cfg.NATSToken,
		Name: "obmux edge " + consumer}, natsbus.NewMetrics(reg), log)
	if err != nil {
		return nil, nil, err
	}
	edge, err := natsbus.NewEdge(nc, natsbus.EdgeConfig{Stream: cfg.NATSStream, Consumer: consumer, SelfID: cfg.SelfID,
		APITimeout: cfg.APITimeout, MaxAckPending: 2*cfg.QueueSize + 1000, AckEvery: 100 * time.Millisecond,
		Retry: time.Second, Account: acct}, state, router, hub, mon, log)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return edge, nc.Close, nil
}

// natsConsumer is an edge's durable consumer: OBMUX_NATS_CONSUMER, else
// derived from the host name.
func natsConsumer(cfg config.Config) string {
	if cfg.NATSConsumer != "" {
		return cfg.NATSConsumer
	}
	return defaultConsumer()
}

// defaultConsumer derives an edge's durable consumer name from the host
// name (a pod's or container's name).
func defaultConsumer() string {
	host, _ := os.Hostname()
	return natsbus.DefaultConsumer(host)
}
