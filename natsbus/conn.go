package natsbus

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
)

// ConnConfig says how to reach NATS.
type ConnConfig struct {
	// URL is one or more comma-separated nats:// or tls:// server URLs.
	URL string
	// Creds is a credentials file (JWT and NKey seed); empty: none.
	Creds string
	// Token is a server token; empty: none.
	Token string
	// Name is the connection name the server shows (e.g. "obmux 10001").
	Name string
}

// Connect connects to NATS, or keeps trying in the background when no
// server answers yet: obmux serves its WebSocket peers whether NATS is there
// or not. A connection that cannot work at all (an unreadable credentials
// file) is an error. Publishes while disconnected fail at once instead of
// filling the client's own reconnect buffer: the Publisher keeps them.
func Connect(cfg ConnConfig, m *Metrics, log *slog.Logger) (*nats.Conn, error) {
	opts := []nats.Option{
		nats.Name(cfg.Name),
		nats.MaxReconnects(-1),
		nats.RetryOnFailedConnect(true),
		nats.ReconnectWait(time.Second),
		nats.ReconnectBufSize(-1),
		nats.ConnectHandler(func(nc *nats.Conn) {
			m.connected.Set(1)
			log.Info("NATS connected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			m.connected.Set(1)
			log.Info("NATS reconnected", "server", nc.ConnectedUrlRedacted())
		}),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			m.connected.Set(0)
			log.Warn("NATS disconnected; events wait in the buffer", "error", err)
		}),
	}
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		return nil, fmt.Errorf("NATS: %w", err)
	}
	return nc, nil
}
