package main

import (
	"log/slog"
	"net"
	"net/http"

	"github.com/obmux/obmux/config"
	"github.com/obmux/obmux/health"
	"github.com/obmux/obmux/wsconn"
)

// originGuard refuses with 403, before next sees it, a request that origin
// refuses (a browser page from another origin, or one that reached obmux by
// a name that could be rebound); each is counted and logged by refusals.
func originGuard(origin wsconn.OriginPolicy, refusals *health.Refusals, listener string, log *slog.Logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := origin.Check(r); err != nil {
			refusals.Refuse(log.With("listener", listener), listener, health.RefusedOrigin, r, "connection refused: bad Origin or Host (HTTP 403)",
				"error", err, "hint", "only browsers send Origin; to let a page reach obmux by a host name, add the name to OBMUX_ALLOWED_HOSTS")
			http.Error(w, "obmux refuses this Origin or Host", http.StatusForbidden)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// upstreamMux serves up on OBMUX_UPSTREAM_PATH and answers any other path
// with 404 and where to point the implementation (each distinct wrong path
// logged, see health.Refusals).
func upstreamMux(cfg config.Config, up http.Handler, refusals *health.Refusals, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.Handle(cfg.UpstreamPath, up)
	if cfg.UpstreamPath == "/" {
		return mux
	}
	_, port, _ := net.SplitHostPort(cfg.UpstreamListen)
	hint := "point the implementation's reverse-WS URL at ws://<obmux>:" + port + cfg.UpstreamPath + " or set OBMUX_UPSTREAM_PATH"
	log = log.With("role", "upstream")
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		refusals.Refuse(log, health.ListenerUpstream, health.RefusedWrongPath, r, "upstream connection on a wrong path (HTTP 404)",
			"want", cfg.UpstreamPath, "hint", hint)
		http.Error(w, "obmux serves the upstream on "+cfg.UpstreamPath, http.StatusNotFound)
	})
	return mux
}
