// Package natstest runs a real NATS server with JetStream inside a test
// process or obmux-bench (the nats-server module, embedded: no binary to
// install, and a test can stop it and start it again on the same port and
// store).
package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Server is a running NATS server with JetStream.
type Server struct {
	*server.Server
	dir  string
	port int
}

// Start runs a server with JetStream storing in dir on 127.0.0.1:port
// (0: any free port), stopped at the end of the test.
func Start(t testing.TB, dir string, port int) *Server {
	t.Helper()
	srv, err := Run(dir, port)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// StartWithToken is Start for a server that requires token from every
// client.
func StartWithToken(t testing.TB, dir, token string) *Server {
	t.Helper()
	srv, err := run(dir, 0, token)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return srv
}

// Run runs a server with JetStream storing in dir on 127.0.0.1:port (0: any
// free port) until Stop, for a program that is not a test (obmux-bench).
func Run(dir string, port int) (*Server, error) { return run(dir, port, "") }

func run(dir string, port int, token string) (*Server, error) {
	if port == 0 {
		port = -1
	}
	opts := &server.Options{Host: "127.0.0.1", Port: port, JetStream: true, StoreDir: dir,
		NoLog: true, NoSigs: true, Authorization: token}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("nats-server: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, errors.New("nats-server did not start within 10s")
	}
	return &Server{Server: s, dir: dir, port: s.Addr().(*net.TCPAddr).Port}, nil
}

// Dir is the server's JetStream store.
func (s *Server) Dir() string { return s.dir }

// Port is the server's port.
func (s *Server) Port() int { return s.port }

// URL is the server's nats:// URL.
func (s *Server) URL() string { return fmt.Sprintf("nats://127.0.0.1:%d", s.port) }

// Stop shuts the server down and waits until it is down.
func (s *Server) Stop() {
	s.Shutdown()
	s.WaitForShutdown()
}

// wait bounds what the helpers below wait for.
const wait = 20 * time.Second

// js connects a JetStream client to s for one helper call.
func (s *Server) js(t testing.TB) (jetstream.JetStream, func()) {
	t.Helper()
	nc, err := nats.Connect(s.URL())
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js, nc.Close
}

// Messages reads n messages of stream from sequence from on, in order,
// waiting up to 20 s for them.
func (s *Server) Messages(t testing.TB, stream string, from uint64, n int) []jetstream.Msg {
	t.Helper()
	js, done := s.js(t)
	defer done()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: max(from, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var out []jetstream.Msg
	for len(out) < n {
		if ctx.Err() != nil {
			t.Fatalf("%d of %d messages of %s from %d within %s", len(out), n, stream, from, wait)
		}
		batch, err := c.Fetch(n-len(out), jetstream.FetchMaxWait(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			out = append(out, m)
		}
		if batch.Error() != nil {
			t.Fatalf("after %d of %d messages: %v", len(out), n, batch.Error())
		}
	}
	return out
}

// Stored reads every message stream holds, in order.
func (s *Server) Stored(t testing.TB, stream string) []jetstream.Msg {
	t.Helper()
	js, done := s.js(t)
	defer done()
	st, err := js.Stream(context.Background(), stream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return s.Messages(t, stream, info.State.FirstSeq, int(info.State.Msgs))
}

// AckFloor is the stream sequence up to which consumer of stream has
// acknowledged everything (0 while it does not exist).
func (s *Server) AckFloor(t testing.TB, stream, consumer string) uint64 {
	t.Helper()
	js, done := s.js(t)
	defer done()
	c, err := js.Consumer(context.Background(), stream, consumer)
	if err != nil {
		return 0
	}
	info, err := c.Info(context.Background())
	if err != nil {
		return 0
	}
	return info.AckFloor.Stream
}

// Consumer returns what JetStream knows of consumer of stream (nil while it
// does not exist).
func (s *Server) Consumer(t testing.TB, stream, consumer string) *jetstream.ConsumerInfo {
	t.Helper()
	js, done := s.js(t)
	defer done()
	c, err := js.Consumer(context.Background(), stream, consumer)
	if err != nil {
		return nil
	}
	info, err := c.Info(context.Background())
	if err != nil {
		return nil
	}
	return info
}

// DeleteConsumer deletes consumer of stream, as an operator's
// `nats consumer rm` would.
func (s *Server) DeleteConsumer(t testing.TB, stream, consumer string) {
	t.Helper()
	js, done := s.js(t)
	defer done()
	if err := js.DeleteConsumer(context.Background(), stream, consumer); err != nil {
		t.Fatal(err)
	}
}

// DeleteStream deletes stream, as an operator's `nats stream rm` would.
func (s *Server) DeleteStream(t testing.TB, stream string) {
	t.Helper()
	js, done := s.js(t)
	defer done()
	if err := js.DeleteStream(context.Background(), stream); err != nil {
		t.Fatal(err)
	}
}
