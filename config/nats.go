package config

import (
	"os"
	"strconv"
	"strings"

	"github.com/obmux/obmux/wsconn"
)

// validateNATS checks the NATS variables when OBMUX_NATS_URL is set.
func validateNATS(cfg *Config, bad badFunc) {
	if cfg.NATSURL == "" {
		return
	}
	for _, u := range strings.Split(cfg.NATSURL, ",") {
		if p := checkURL(strings.TrimSpace(u), "must be nats:// or tls:// URLs, comma-separated for a cluster", "nats", "tls"); p != "" {
			bad("NATS_URL", strconv.Quote(wsconn.RedactURL(strings.TrimSpace(u))), p)
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
