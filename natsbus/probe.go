package natsbus

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Probe connects to NATS once, as obmux doctor does, and says what it finds
// in the user's terms: the server and its round trip, the stream (or that
// obmux will create it), and, given an edge's consumer, where that edge
// resumes. An error says what is wrong and what usually fixes it.
func Probe(ctx context.Context, cfg ConnConfig, stream, consumer string) (string, error) {
	opts := []nats.Option{nats.Name(cfg.Name), nats.Timeout(5 * time.Second), nats.MaxReconnects(0)}
	if cfg.Creds != "" {
		opts = append(opts, nats.UserCredentials(cfg.Creds))
	}
	if cfg.Token != "" {
		opts = append(opts, nats.Token(cfg.Token))
	}
	began := time.Now()
	nc, err := nats.Connect(cfg.URL, opts...)
	if err != nil {
		hint := "is nats-server running and reachable from here (a container name resolves only inside its compose network)?"
		if errors.Is(err, nats.ErrAuthorization) || strings.Contains(err.Error(), "Authorization") {
			hint = "the server wants other credentials: set OBMUX_NATS_TOKEN or OBMUX_NATS_CREDS"
		}
		return "", fmt.Errorf("cannot connect: %w: %s", err, hint)
	}
	defer nc.Close()
	connect := time.Since(began)
	rtt, _ := nc.RTT()
	js, err := jetstream.New(nc)
	if err != nil {
		return "", fmt.Errorf("JetStream: %w", err)
	}
	server := fmt.Sprintf("%s (connect %s, round trip %s)", nc.ConnectedUrlRedacted(), connect.Round(time.Millisecond), rtt.Round(time.Microsecond))
	s, err := js.Stream(ctx, stream)
	switch {
	case errors.Is(err, jetstream.ErrStreamNotFound) && consumer == "":
		if _, err := js.AccountInfo(ctx); err != nil {
			return "", fmt.Errorf("%s: JetStream is not enabled (%w): start nats-server with -js", server, err)
		}
		return server + ": stream " + stream + " does not exist yet; obmux creates it", nil
	case errors.Is(err, jetstream.ErrStreamNotFound):
		return "", fmt.Errorf("%s: stream %s does not exist: is the account side's obmux running with OBMUX_NATS_URL and the same OBMUX_NATS_STREAM?", server, stream)
	case err != nil:
		return "", fmt.Errorf("%s: stream %s: %w (is JetStream enabled? nats-server -js)", server, stream, err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: stream %s: %w", server, stream, err)
	}
	detail := fmt.Sprintf("%s: stream %s holds %d events (%d bytes)", server, stream, info.State.Msgs, info.State.Bytes)
	if consumer == "" {
		if err := EnsureStream(ctx, js, PublisherConfig{Stream: stream}); err != nil {
			return "", fmt.Errorf("%s: %w", server, err)
		}
		return detail, nil
	}
	c, err := s.Consumer(ctx, consumer)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		return detail + "; consumer " + consumer + " is new: this edge starts with the events published from its start on", nil
	}
	if err != nil {
		return "", fmt.Errorf("%s: consumer %s: %w", detail, consumer, err)
	}
	ci, err := c.Info(ctx)
	if err != nil {
		return "", fmt.Errorf("%s: consumer %s: %w", detail, consumer, err)
	}
	return fmt.Sprintf("%s; consumer %s resumes after stream sequence %d (%d events behind)", detail, consumer,
		ci.AckFloor.Stream, info.State.LastSeq-min(info.State.LastSeq, ci.AckFloor.Stream)), nil
}
