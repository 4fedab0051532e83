package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/obmux/obmux/config"
	"github.com/obmux/obmux/fanout"
	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/policy"
	"github.com/obmux/obmux/proxy"
	"github.com/obmux/obmux/wsconn"
)

// readBudgetMessages is how many messages of OBMUX_MAX_MESSAGE_BYTES the
// targets and clients may be reading at once.
const readBudgetMessages = 2

// started, if not nil, is told the listen addresses once obmux serves (for
// tests and the demo).
type started func(addrs listenAddrs)

type listenAddrs struct{ Metrics, Upstream, Forward string }

// serve runs the sidecar until ctx is done, then shuts down in order: stop
// accepting, lifecycle disable and close 1001 to every target and client,
// close the upstream, exit.
func serve(ctx context.Context, cfg config.Config, stderr io.Writer, onStart started) error {
	log := newLogger(cfg, stderr)
	sc, err := newSidecar(cfg, log)
	if err != nil {
		return err
	}
	defer sc.close()
	// Listen on everything first, so that a taken port fails before anything
	// connects anywhere.
	ls, addrs, err := sc.listen()
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	ls.serve(&wg, log)
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	// The bus outlives the upstream at shutdown: what the upstream sent
	// last is still published.
	busCtx, stopBus := context.WithCancel(context.WithoutCancel(ctx))
	wg.Go(func() { sc.bus.run(busCtx) })
	sc.run(runCtx, &wg)
	log.Info("obmux serving", "version", version, "upstream", describeUpstream(cfg, addrs), "targets", len(cfg.Targets),
		"metrics", addrs.Metrics, "forward", addrs.Forward)
	warnNoTarget(cfg, log)
	if onStart != nil {
		onStart(addrs)
	}

	<-ctx.Done()
	sc.shutdown(ls, stopRun, stopBus)
	wg.Wait()
	log.Info("obmux stopped")
	return nil
}

// sidecar is obmux built from its configuration: the metrics, the account,
// the router, the hub, the event bus and the upstream, wired together.
type sidecar struct {
	cfg      config.Config
	log      *slog.Logger
	reg      *prometheus.Registry
	mon      *health.Monitor
	acct     *health.Account
	refusals *health.Refusals
	router   *proxy.Router
	hub      *fanout.Hub
	bus      *natsBus
	up       upstreamSide         // the implementation's connection, or the NATS edge
	wsUp     *proxy.Upstream      // the implementation's (nil on an edge)
	edgeConn func()               // closes an edge's NATS connection
	queue    prometheus.Collector // obmux_queue_length
	refused  prometheus.Counter   // obmux_forward_clients_refused_total
	ua       string
	started  time.Time
}

// newSidecar builds obmux from cfg: nothing listens or dials yet.
func newSidecar(cfg config.Config, log *slog.Logger) (*sidecar, error) {
	reg := prometheus.NewRegistry()
	mon := health.NewMonitor(health.NewMetrics(reg, version))
	mon.Redact = wsconn.RedactText
	sc := &sidecar{cfg: cfg, log: log, reg: reg, mon: mon, acct: health.NewAccount(reg), refusals: health.NewRefusals(reg),
		ua: "obmux/" + version, started: time.Now()}

	connCfg := wsconn.Config{PingInterval: cfg.PingInterval, PingTimeout: cfg.PingTimeout,
		WriteTimeout: cfg.WriteTimeout, CloseTimeout: cfg.ShutdownTimeout,
		ReadLimit: cfg.MaxMessageBytes, QueueSize: cfg.QueueSize, QueueBytes: cfg.QueueBytes}
	// Targets and clients read a large message only with a share of one
	// budget, so the memory of messages being read does not grow with the
	// number of connections (the upstream, one connection, has its own).
	peerCfg := connCfg
	peerCfg.ReadBudget = wsconn.NewReadBudget(readBudgetMessages * cfg.MaxMessageBytes)
	backoff := wsconn.Backoff{Min: cfg.ReconnectMin, Max: cfg.ReconnectMax}

	policies := []*policy.Policy{&cfg.Forward}
	for i := range cfg.Targets {
		policies = append(policies, &cfg.Targets[i].Policy)
	}
	// Every call in flight counts against its caller's limits and, all
	// together, against the upstream queue's byte bound, which therefore
	// never refuses one.
	sc.router = proxy.NewRouter(cfg.APITimeout, proxy.Limits{Calls: cfg.APIMaxInflight, Bytes: cfg.APIMaxInflightBytes,
		TotalBytes: cfg.QueueBytes, Send: cfg.Send}, log)
	// The upstream writes its state, the hub reads it.
	state := proxy.NewUpstreamState()
	sc.hub = fanout.NewHub(fanout.Config{QueueSize: cfg.QueueSize, QueueBytes: cfg.QueueBytes,
		Slow: fanout.SlowPolicy(cfg.SlowTarget), ReplaySize: cfg.ReplaySize, ReplayBytes: cfg.ReplayBytes,
		ReplayMaxAge: cfg.ReplayMaxAge, HeartbeatInterval: cfg.HeartbeatInterval,
		Conn: peerCfg, Backoff: backoff, UserAgent: sc.ua, Ingest: policy.NewIngest(policies...),
		Durable: cfg.Edge()}, state, sc.router, mon, log)
	upCfg := connCfg
	upCfg.KeepReadBuffer = int(cfg.MaxMessageBytes) // events with images arrive here
	// The upstream's queue holds every caller's calls: each caller has at
	// most OBMUX_API_MAX_INFLIGHT in flight, so this bound is only a guard;
	// in bytes, the router counts every call (one that timed out too) until
	// its frame has left this queue, within QueueBytes: it never refuses one.
	upCfg.QueueSize = max(cfg.QueueSize, 1<<16)
	var err error
	if sc.bus, err = newNATSBus(cfg, sc.router, sc.acct, mon, reg, log); err != nil {
		return nil, err
	}
	if cfg.Edge() {
		if sc.up, sc.edgeConn, err = newEdge(cfg, state, sc.router, sc.hub, sc.acct, mon, reg, log); err != nil {
			return nil, err
		}
	} else {
		sc.wsUp = proxy.NewUpstream(proxy.UpstreamConfig{URL: cfg.UpstreamURL, Token: cfg.UpstreamToken, SelfID: cfg.SelfID,
			UserAgent: sc.ua, Conn: upCfg, Backoff: backoff, Account: sc.acct, Refusals: sc.refusals}, state, sc.router, sc.bus.sink(sc.hub), mon, log)
		sc.up = sc.wsUp
	}
	sc.register(peerCfg.ReadBudget)
	return sc, nil
}

// register registers the metrics that are read from the parts when scraped.
func (sc *sidecar) register(budget *wsconn.ReadBudget) {
	router := sc.router
	sc.queue = sc.hub.QueueCollector()
	sc.reg.MustRegister(sc.queue, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "obmux_api_pending_requests",
		Help: "API calls waiting for the upstream's response."}, func() float64 { return float64(router.Pending()) }))
	sc.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "obmux_api_inflight_bytes",
		Help: "Bytes of the API calls in flight (queued for the upstream or waiting for its response), bounded by OBMUX_QUEUE_BYTES."},
		func() float64 { return float64(router.InflightBytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "obmux_read_budget_used_bytes",
			Help: "Bytes of the shared read budget held by targets and clients reading a message over 64 KiB."},
			func() float64 { used, _ := budget.Used(); return float64(used) }))
	sc.refused = prometheus.NewCounter(prometheus.CounterOpts{Name: "obmux_forward_clients_refused_total",
		Help: "Forward-WS connections refused with HTTP 503 because OBMUX_FORWARD_MAX_CLIENTS clients were connected."})
	sc.reg.MustRegister(sc.refused)
}

// listener is one HTTP server and the socket it serves.
type listener struct {
	srv *http.Server
	ln  net.Listener
}

// listeners are obmux's HTTP servers: the metrics server, which stops last
// (the health endpoints answer until obmux is gone), and the others.
type listeners struct {
	metrics listener
	others  []listener
}

// all returns every listener, the metrics one first.
func (ls *listeners) all() []listener { return append([]listener{ls.metrics}, ls.others...) }

// serve serves every listener on its own goroutine, counted in wg.
func (ls *listeners) serve(wg *sync.WaitGroup, log *slog.Logger) {
	for _, l := range ls.all() {
		wg.Go(func() {
			if err := l.srv.Serve(l.ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("HTTP server failed", "addr", l.ln.Addr().String(), "error", err)
			}
		})
	}
}

// listen opens every listener obmux serves; every taken port is reported,
// not only the first.
func (sc *sidecar) listen() (*listeners, listenAddrs, error) {
	cfg := sc.cfg
	var ls listeners
	var addrs listenAddrs
	var busy []error
	open := func(variable, addr string, h http.Handler, conns int) (listener, string) {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			busy = append(busy, fmt.Errorf("%s%s=%s: cannot listen (is another program on that port? set %s%s to another address): %w",
				config.Prefix, variable, addr, config.Prefix, variable, err))
			return listener{}, ""
		}
		return listener{newHTTPServer(cfg, h, sc.log), limitListener(ln, conns)}, ln.Addr().String()
	}
	ls.metrics, addrs.Metrics = open("METRICS_LISTEN", cfg.MetricsListen, sc.metricsHandler(), spareConns)
	other := func(variable, addr string, h http.Handler, conns int) string {
		l, a := open(variable, addr, h, conns)
		if l.ln != nil {
			ls.others = append(ls.others, l)
		}
		return a
	}
	origin := wsconn.OriginPolicy{AllowedHosts: cfg.AllowedHosts}
	if cfg.UpstreamURL == "" {
		addrs.Upstream = other("UPSTREAM_LISTEN", cfg.UpstreamListen,
			originGuard(origin, sc.refusals, health.ListenerUpstream, sc.log, upstreamMux(cfg, sc.wsUp, sc.refusals, sc.log)), spareConns)
	}
	if cfg.ForwardListen != "" {
		fwd := sc.hub.NewServer(fanout.ServerConfig{Token: cfg.ForwardToken, APIHeartbeat: cfg.ForwardAPIHeartbeat, Policy: cfg.Forward,
			MaxClients: cfg.ForwardMaxClients, Refused: sc.refused, Refusals: sc.refusals})
		addrs.Forward = other("FORWARD_LISTEN", cfg.ForwardListen, originGuard(origin, sc.refusals, health.ListenerForward, sc.log, fwd),
			cfg.ForwardMaxClients+spareConns)
	}
	if len(busy) > 0 {
		for _, l := range ls.all() {
			if l.ln != nil {
				l.ln.Close()
			}
		}
		return nil, addrs, errors.Join(busy...)
	}
	if addrs.Upstream != "" && cfg.UpstreamToken == "" && !loopback(addrs.Upstream) {
		sc.log.Warn("the upstream listener is reachable from other hosts and has no token: anyone who can reach it can connect as the implementation",
			"OBMUX_UPSTREAM_LISTEN", cfg.UpstreamListen, "addr", addrs.Upstream,
			"hint", "set OBMUX_UPSTREAM_TOKEN (and the same token in the implementation), or listen on 127.0.0.1 when it runs on this host")
	}
	return &ls, addrs, nil
}

// loopback reports whether the listen address addr (host:port, as the
// listener reports it) takes connections from this host only.
func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// metricsHandler serves the status page (GET /) and its JSON (GET /status)
// beside the health endpoints and the metrics.
func (sc *sidecar) metricsHandler() http.Handler {
	healthHandler := sc.mon.Handler(sc.up.Ready, promhttp.HandlerFor(sc.reg, promhttp.HandlerOpts{Registry: sc.reg}))
	status := sc.mon.StatusHandler(health.StatusConfig{Version: version, Started: sc.started, Account: sc.acct,
		Queue: health.CollectorValues(sc.queue, "name"), Redact: wsconn.RedactText})
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", status)
	mux.Handle("GET /status", status)
	mux.Handle("/", healthHandler)
	return mux
}

// run starts the upstream, every target and the notifier on goroutines
// counted in wg, until ctx is done.
func (sc *sidecar) run(ctx context.Context, wg *sync.WaitGroup) {
	cfg, log := sc.cfg, sc.log
	wg.Go(func() { sc.up.Run(ctx) })
	for _, t := range cfg.Targets {
		target := sc.hub.NewTarget(t)
		wg.Go(func() { target.Run(ctx) })
	}
	if cfg.NotifyURL != "" {
		notifier := health.NewNotifier(health.NotifyConfig{URL: cfg.NotifyURL, After: cfg.NotifyAfter, UserAgent: sc.ua,
			Redact: wsconn.RedactText, Log: log.With("component", "notify"),
			// Look often enough that "down for NOTIFY_AFTER" is not late by much.
			Tick: min(max(cfg.NotifyAfter/4, 50*time.Millisecond), time.Second)}, sc.mon, sc.acct, sc.reg)
		wg.Go(func() { notifier.Run(ctx) })
		log.Info("notifications on", "url", wsconn.RedactURL(cfg.NotifyURL), "after", cfg.NotifyAfter)
	}
	if cfg.Send.Rate > 0 {
		log.Info("send rate limit on, for the whole account", "rate", cfg.SendRate, "burst", cfg.SendBurst, "actions", cfg.Send.Actions)
	}
}

// shutdown stops obmux in order: the listeners but the metrics one, the
// peers (lifecycle disable, close 1001), the upstream, what run started
// (stopRun), the bus once it has published what is left (stopBus), the
// metrics listener.
func (sc *sidecar) shutdown(ls *listeners, stopRun, stopBus context.CancelFunc) {
	cfg := sc.cfg
	sc.log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	shCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Stop accepting, with a short deadline of its own: a client holding a
	// request open must not use the peers' time.
	stopServers(servers(ls.others), listenersShutdown(cfg))
	// NATS callers go to another replica from now on; an edge tells
	// JetStream what its peers have, before they leave.
	sc.bus.stopAPI()
	if e, ok := sc.up.(interface{ Settle(context.Context) }); ok {
		e.Settle(shCtx)
	}
	// Peers first, with most of the time; the upstream then gets its 1001
	// even when a stuck peer used the peers' share.
	peersCtx, cancelPeers := context.WithTimeout(shCtx, cfg.ShutdownTimeout*4/5)
	sc.hub.Close(peersCtx)
	cancelPeers()
	sc.up.Close(shCtx)
	stopRun()
	sc.bus.flush(shCtx)
	stopBus()
	stopServers(servers([]listener{ls.metrics}), metricsShutdown(cfg))
}

// servers returns the HTTP servers of ls.
func servers(ls []listener) []*http.Server {
	out := make([]*http.Server, len(ls))
	for i, l := range ls {
		out[i] = l.srv
	}
	return out
}

// warnNoTarget says at start that no target is configured: with no
// forward-WS server either, events go nowhere.
func warnNoTarget(cfg config.Config, log *slog.Logger) {
	if len(cfg.Targets) > 0 {
		return
	}
	hint := "set OBMUX_TARGET_<NAME>_URL to each framework's reverse-WS address, such as " +
		"OBMUX_TARGET_NONEBOT_URL=ws://nonebot:8080/onebot/v11/ws or OBMUX_TARGET_KOISHI_URL=ws://koishi:5140/onebot"
	if cfg.ForwardListen != "" {
		log.Info("no target configured: events go only to forward-WS clients", "hint", hint)
		return
	}
	log.Warn("no target configured: events go nowhere", "hint", hint)
}

func describeUpstream(cfg config.Config, a listenAddrs) string {
	if cfg.UpstreamURL != "" {
		return "dial " + wsconn.RedactURL(cfg.UpstreamURL)
	}
	return "listen " + a.Upstream + cfg.UpstreamPath
}
