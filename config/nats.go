package config

import (
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/obmux/obmux/natsbus"
	"github.com/obmux/obmux/policy"
	"github.com/obmux/obmux/wsconn"
)

// natsSuffixes are the policy variables that apply to NATS callers
// (OBMUX_NATS_<SUFFIX>): which API calls they may make.
var natsSuffixes = []string{"API_ALLOW", "API_DENY"}

// natsVar matches them.
var natsVar = regexp.MustCompile(`^OBMUX_NATS_(` + strings.Join(natsSuffixes, "|") + `)$`)

// natsCallerVar matches the policy of one named NATS caller,
// OBMUX_NATS_CALLER_<NAME>_<SUFFIX>: the caller whose requests carry the
// header Obmux-Caller: <name> (an edge sends its consumer name).
var natsCallerVar = regexp.MustCompile(`^OBMUX_NATS_CALLER_(.+?)_(` + strings.Join(natsSuffixes, "|") + `)$`)

// setNATSCaller sets one named NATS caller's variable; it returns a problem
// or "".
func setNATSCaller(cfg *Config, k, name, suffix, v string) string {
	if !targetName.MatchString(name) {
		return k + ": the caller name may hold only letters, digits and _"
	}
	if cfg.NATSNamed == nil {
		cfg.NATSNamed = map[string]policy.Policy{}
	}
	key := natsbus.CallerKey(name)
	pol := cfg.NATSNamed[key]
	row, _ := policy.Lookup(suffix)
	if err := row.Set(&pol, v); err != nil {
		return policy.Problem(k, v, err)
	}
	cfg.NATSNamed[key] = pol
	return ""
}

// Edge reports whether obmux takes its events from NATS
// (OBMUX_UPSTREAM_URL=nats://...) rather than from a OneBot implementation.
func (c *Config) Edge() bool {
	return strings.HasPrefix(c.UpstreamURL, "nats://") || strings.HasPrefix(c.UpstreamURL, "tls://")
}

// NATSServers is the NATS URL obmux connects to: OBMUX_UPSTREAM_URL on an
// edge, OBMUX_NATS_URL on the account side ("" : none).
func (c *Config) NATSServers() string {
	if c.Edge() {
		return c.UpstreamURL
	}
	return c.NATSURL
}

// validateNATS checks the NATS variables when obmux uses NATS: as the
// account side (OBMUX_NATS_URL) or as an edge (OBMUX_UPSTREAM_URL=nats://).
func validateNATS(cfg *Config, bad badFunc) {
	urlVar := "NATS_URL"
	if cfg.Edge() {
		urlVar = "UPSTREAM_URL"
		if cfg.SelfID <= 0 {
			bad("SELF_ID", cfg.SelfID, "is required with OBMUX_UPSTREAM_URL=nats://: the QQ number whose events this edge serves")
		}
		if cfg.NATSURL != "" {
			bad("NATS_URL", strconv.Quote(wsconn.RedactURL(cfg.NATSURL)), "must be empty on an edge (OBMUX_UPSTREAM_URL=nats://): an edge consumes the stream, the account side publishes it")
		}
		if cfg.NATSConsumer != "" && strings.ContainsAny(cfg.NATSConsumer, " \t.*>/\\") {
			bad("NATS_CONSUMER", strconv.Quote(cfg.NATSConsumer), "must be a consumer name without spaces, '.', '*', '>', '/' or '\\\\'")
		}
	}
	servers := cfg.NATSServers()
	if servers == "" {
		return
	}
	for _, u := range strings.Split(servers, ",") {
		if p := checkURL(strings.TrimSpace(u), "must be nats:// or tls:// URLs, comma-separated for a cluster", "nats", "tls"); p != "" {
			bad(urlVar, strconv.Quote(wsconn.RedactURL(strings.TrimSpace(u))), p)
		}
	}
	if cfg.NATSCreds != "" {
		if _, err := os.ReadFile(cfg.NATSCreds); err != nil {
			bad("NATS_CREDS", strconv.Quote(cfg.NATSCreds), "cannot read the credentials file: "+err.Error())
		}
		if cfg.NATSToken != "" {
			bad("NATS_TOKEN", "***", "set OBMUX_NATS_CREDS or OBMUX_NATS_TOKEN, not both")
		}
	}
	if cfg.NATSStream == "" || strings.ContainsAny(cfg.NATSStream, " \t.*>/\\") {
		bad("NATS_STREAM", strconv.Quote(cfg.NATSStream), "must be a stream name without spaces, '.', '*', '>', '/' or '\\\\'")
	}
	if cfg.NATSMaxAge <= 0 {
		bad("NATS_MAX_AGE", cfg.NATSMaxAge, "must be a positive duration such as 24h")
	}
	if cfg.NATSMaxBytes < 1<<20 {
		bad("NATS_MAX_BYTES", cfg.NATSMaxBytes, "must be at least 1048576 (1 MiB)")
	}
	if cfg.NATSBufferBytes < cfg.MaxMessageBytes {
		bad("NATS_BUFFER_BYTES", cfg.NATSBufferBytes, "must be at least OBMUX_MAX_MESSAGE_BYTES ("+strconv.FormatInt(cfg.MaxMessageBytes, 10)+"), or one large event could never be buffered")
	}
}
