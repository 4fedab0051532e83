package wsconn

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
)

// OriginPolicy decides which browser pages may open a WebSocket to obmux.
// Bots and implementations send no Origin header and are never refused by
// it. A request with an Origin must come from the same origin (the Origin's
// host equals the Host header, as coder/websocket checks) and, because a
// page can make its own name resolve to obmux's address (DNS rebinding), its
// Host must be loopback (localhost), an IP address, or one of AllowedHosts.
type OriginPolicy struct {
	// AllowedHosts are host names (no port) a browser may use to reach
	// obmux (OBMUX_ALLOWED_HOSTS), compared without case.
	AllowedHosts []string
}

// Check returns nil when r may be upgraded, else why not.
func (p OriginPolicy) Check(r *http.Request) error {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return fmt.Errorf("the Origin header is not a URL with a host")
	}
	if !strings.EqualFold(u.Host, r.Host) {
		return fmt.Errorf("a page from another origin (Origin host %q, Host %q)", short(u.Host), short(r.Host))
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	if net.ParseIP(host) != nil || host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return nil
	}
	for _, a := range p.AllowedHosts {
		if strings.EqualFold(strings.TrimSuffix(a, "."), host) {
			return nil
		}
	}
	return fmt.Errorf("a browser page reached obmux by the name %q, which is not loopback, an IP address or in OBMUX_ALLOWED_HOSTS (DNS rebinding?)", short(host))
}

// short bounds a header value quoted in an error.
func short(s string) string {
	if len(s) > 100 {
		return s[:100] + "…"
	}
	return s
}
