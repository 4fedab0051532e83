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
	reg := prometheus.NewRegistry()
	metrics := health.NewMetrics(reg, version)
	mon := health.NewMonitor(metrics)
	mon.Redact = wsconn.RedactText
	acct := health.NewAccount(reg)
	refusals := health.NewRefusals(reg)
	origin := wsconn.OriginPolicy{AllowedHosts: cfg.AllowedHosts}
	started := time.Now()

	connCfg := wsconn.Config{PingInterval: cfg.PingInterval, PingTimeout: cfg.PingTimeout,
		WriteTimeout: cfg.WriteTimeout, CloseTimeout: cfg.ShutdownTimeout,
		ReadLimit: cfg.MaxMessageBytes, QueueSize: cfg.QueueSize, QueueBytes: cfg.QueueBytes}
	// Targets and clients read a large message only with a share of one
	// budget, so the memory of messages being read does not grow with the
	// number of connections (the upstream, one connection, has its own).
	peerCfg := connCfg
	peerCfg.ReadBudget = wsconn.NewReadBudget(readBudgetMessages * cfg.MaxMessageBytes)
	backoff := wsconn.Backoff{Min: cfg.ReconnectMin, Max: cfg.ReconnectMax}
	ua := "obmux/" + version

	policies := []*policy.Policy{&cfg.Forward}
	for i := range cfg.Targets {
		policies = append(policies, &cfg.Targets[i].Policy)
	}
	// Every call in flight counts against its caller's limits and, all
	// together, against the upstream queue's byte bound, which therefore
	// never refuses one.
	router := proxy.NewRouter(cfg.APITimeout, proxy.Limits{Calls: cfg.APIMaxInflight, Bytes: cfg.APIMaxInflightBytes,
		TotalBytes: cfg.QueueBytes, Send: cfg.Send}, log)
	hub := fanout.NewHub(fanout.Config{QueueSize: cfg.QueueSize, QueueBytes: cfg.QueueBytes,
		Slow: fanout.SlowPolicy(cfg.SlowTarget), ReplaySize: cfg.ReplaySize, ReplayBytes: cfg.ReplayBytes,
		ReplayMaxAge: cfg.ReplayMaxAge, HeartbeatInterval: cfg.HeartbeatInterval,
		Conn: peerCfg, Backoff: backoff, UserAgent: ua, Ingest: policy.NewIngest(policies...)}, router, mon, log)
	upCfg := connCfg
	upCfg.KeepReadBuffer = int(cfg.MaxMessageBytes) // events with images arrive here
	// The upstream's queue holds every caller's calls: each caller has at
	// most OBMUX_API_MAX_INFLIGHT in flight, so this bound is only a guard;
	// in bytes, the router keeps the calls in flight within QueueBytes, but
	// a call that timed out may still have its frame queued behind a slow
	// upstream (which the write timeout cuts): twice that is the guard.
	upCfg.QueueSize = max(cfg.QueueSize, 1<<16)
	upCfg.QueueBytes = 2 * cfg.QueueBytes
	bus, err := newNATSBus(cfg, router, acct, mon, reg, log)
	if err != nil {
		return err
	}
	defer bus.close()
	up := proxy.NewUpstream(proxy.UpstreamConfig{URL: cfg.UpstreamURL, Token: cfg.UpstreamToken, SelfID: cfg.SelfID,
		UserAgent: ua, Conn: upCfg, Backoff: backoff, Account: acct, Refusals: refusals}, router, bus.sink(hub), mon, log)
	hub.SetUpstream(up)
	queue := hub.QueueCollector()
	reg.MustRegister(queue, prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "obmux_api_pending_requests",
		Help: "API calls waiting for the upstream's response."}, func() float64 { return float64(router.Pending()) }))
	reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "obmux_api_inflight_bytes",
		Help: "Bytes of the API calls in flight (queued for the upstream or waiting for its response), bounded by OBMUX_QUEUE_BYTES."},
		func() float64 { return float64(router.InflightBytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "obmux_read_budget_used_bytes",
			Help: "Bytes of the shared read budget held by targets and clients reading a message over 64 KiB."},
			func() float64 { used, _ := peerCfg.ReadBudget.Used(); return float64(used) }))
	refused := prometheus.NewCounter(prometheus.CounterOpts{Name: "obmux_forward_clients_refused_total",
		Help: "Forward-WS connections refused with HTTP 503 because OBMUX_FORWARD_MAX_CLIENTS clients were connected."})
	reg.MustRegister(refused)

	// Listen on everything first, so that a taken port fails before anything
	// connects anywhere; every taken port is reported, not only the first.
	var servers []*http.Server
	var lns []net.Listener
	var busy []error
	listen := func(variable, addr string, h http.Handler, conns int) string {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			busy = append(busy, fmt.Errorf("%s%s=%s: cannot listen (is another program on that port? set %s%s to another address): %w",
				config.Prefix, variable, addr, config.Prefix, variable, err))
			return ""
		}
		lns = append(lns, limitListener(ln, conns))
		servers = append(servers, newHTTPServer(cfg, h, log))
		return ln.Addr().String()
	}
	var addrs listenAddrs
	healthHandler := mon.Handler(up.Ready, promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	// The status page (GET /) and its JSON (GET /status) beside the health
	// endpoints and the metrics.
	status := mon.StatusHandler(health.StatusConfig{Version: version, Started: started, Account: acct,
		Queue: health.CollectorValues(queue, "name"), Redact: wsconn.RedactText})
	metricsMux := http.NewServeMux()
	metricsMux.Handle("GET /{$}", status)
	metricsMux.Handle("GET /status", status)
	metricsMux.Handle("/", healthHandler)
	addrs.Metrics = listen("METRICS_LISTEN", cfg.MetricsListen, metricsMux, spareConns)
	if cfg.UpstreamURL == "" {
		addrs.Upstream = listen("UPSTREAM_LISTEN", cfg.UpstreamListen,
			originGuard(origin, refusals, health.ListenerUpstream, log, upstreamMux(cfg, up, refusals, log)), spareConns)
	}
	if cfg.ForwardListen != "" {
		fwd := hub.NewServer(fanout.ServerConfig{Token: cfg.ForwardToken, APIHeartbeat: cfg.ForwardAPIHeartbeat, Policy: cfg.Forward,
			MaxClients: cfg.ForwardMaxClients, Refused: refused, Refusals: refusals})
		addrs.Forward = listen("FORWARD_LISTEN", cfg.ForwardListen, originGuard(origin, refusals, health.ListenerForward, log, fwd), cfg.ForwardMaxClients+spareConns)
	}
	if len(busy) > 0 {
		closeAll(lns)
		return errors.Join(busy...)
	}

	var wg sync.WaitGroup
	for i, srv := range servers {
		wg.Go(func() {
			if err := srv.Serve(lns[i]); err != nil && !errors.Is(err, http.ErrServerClosed) {
				log.Error("HTTP server failed", "addr", lns[i].Addr().String(), "error", err)
			}
		})
	}
	runCtx, stopRun := context.WithCancel(context.WithoutCancel(ctx))
	wg.Go(func() { up.Run(runCtx) })
	// The bus outlives the upstream at shutdown: what the upstream sent
	// last is still published.
	busCtx, stopBus := context.WithCancel(context.WithoutCancel(ctx))
	wg.Go(func() { bus.run(busCtx) })
	for _, t := range cfg.Targets {
		target := hub.NewTarget(t)
		wg.Go(func() { target.Run(runCtx) })
	}
	if cfg.NotifyURL != "" {
		notifier := health.NewNotifier(health.NotifyConfig{URL: cfg.NotifyURL, After: cfg.NotifyAfter, UserAgent: ua,
			Redact: wsconn.RedactText, Log: log.With("component", "notify"),
			// Look often enough that "down for NOTIFY_AFTER" is not late by much.
			Tick: min(max(cfg.NotifyAfter/4, 50*time.Millisecond), time.Second)}, mon, acct, reg)
		wg.Go(func() { notifier.Run(runCtx) })
		log.Info("notifications on", "url", wsconn.RedactURL(cfg.NotifyURL), "after", cfg.NotifyAfter)
	}
	if cfg.Send.Rate > 0 {
		log.Info("send rate limit on, for the whole account", "rate", cfg.SendRate, "burst", cfg.SendBurst, "actions", cfg.Send.Actions)
	}
	log.Info("obmux serving", "version", version, "upstream", describeUpstream(cfg, addrs), "targets", len(cfg.Targets),
		"metrics", addrs.Metrics, "forward", addrs.Forward)
	warnNoTarget(cfg, log)
	if onStart != nil {
		onStart(addrs)
	}

	<-ctx.Done()
	log.Info("shutting down", "timeout", cfg.ShutdownTimeout)
	shCtx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// Stop accepting, with a short deadline of its own: a client holding a
	// request open must not use the peers' time.
	stopServers(servers[1:], listenersShutdown(cfg))
	// Peers first, with most of the time; the upstream then gets its 1001
	// even when a stuck peer used the peers' share.
	peersCtx, cancelPeers := context.WithTimeout(shCtx, cfg.ShutdownTimeout*4/5)
	hub.Close(peersCtx)
	cancelPeers()
	up.Close(shCtx)
	stopRun()
	bus.flush(shCtx)
	stopBus()
	stopServers(servers[:1], listenersShutdown(cfg))
	wg.Wait()
	log.Info("obmux stopped")
	return nil
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

func closeAll(lns []net.Listener) {
	for _, ln := range lns {
		ln.Close()
	}
}

func describeUpstream(cfg config.Config, a listenAddrs) string {
	if cfg.UpstreamURL != "" {
		return "dial " + wsconn.RedactURL(cfg.UpstreamURL)
	}
	return "listen " + a.Upstream + cfg.UpstreamPath
}
