package main

import (
	"context"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/netutil"

	"github.com/obmux/obmux/config"
)

// spareConns is how many connections a listener serves at once beyond the
// WebSockets it is meant to hold (the forward-WS listener's
// OBMUX_FORWARD_MAX_CLIENTS; none for the others, whose connections are a
// scrape, a probe or the one upstream): requests being read or answered,
// handshakes being refused. More wait in the kernel's accept queue, so that
// a flood of connections cannot take the file descriptors obmux needs for
// its own dials and for its other listeners.
const spareConns = 64

// httpIdleTimeout closes a keep-alive connection with no request for that
// long (a Prometheus scrape or the status page reuses one well within it).
const httpIdleTimeout = 60 * time.Second

// limitListener bounds ln to n connections at once (golang.org/x/net's
// netutil.LimitListener: a connection counts until it is closed, upgraded
// WebSockets included).
func limitListener(ln net.Listener, n int) net.Listener { return netutil.LimitListener(ln, n) }

// newHTTPServer returns the server of one listener. A request must arrive
// whole, headers and body, within OBMUX_HTTP_TIMEOUT, so that a client that
// never sends the body it announced cannot hold a connection (nor delay
// shutdown); upgraded WebSockets are not affected (wsconn.Accept clears
// the deadlines the server set).
func newHTTPServer(cfg config.Config, h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{Handler: h, ReadHeaderTimeout: cfg.HTTPTimeout, ReadTimeout: cfg.HTTPTimeout,
		IdleTimeout: httpIdleTimeout, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelDebug)}
}

// listenersShutdown is how long the listeners' shutdown waits for requests
// being answered before it closes their connections: short, and out of
// OBMUX_SHUTDOWN_TIMEOUT, so that the peers always have the rest of it for
// lifecycle disable and close 1001.
func listenersShutdown(cfg config.Config) time.Duration {
	return min(time.Second, cfg.ShutdownTimeout/5)
}

// metricsShutdown is the same for the metrics listener, stopped last of
// all: the peers are closed by then, a scrape being answered gets a moment.
func metricsShutdown(cfg config.Config) time.Duration {
	return min(200*time.Millisecond, listenersShutdown(cfg))
}

// stopServers stops servers at once: each stops accepting, closes its idle
// connections and has d to finish the requests it is answering, then the
// connections left are closed. Hijacked WebSockets are not touched (they
// are the hub's and the upstream's to close).
func stopServers(servers []*http.Server, d time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Go(func() {
			if srv.Shutdown(ctx) != nil {
				srv.Close()
			}
		})
	}
	wg.Wait()
}
