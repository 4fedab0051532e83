package main

import (
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/obmux/obmux/internal/natstest"
)

// natsRelay is obmux over NATS JetStream: an account-side obmux on the
// upstream publishes every event to an embedded JetStream server, and an
// edge obmux serves the targets from the stream. The edge is the measured
// process (its CPU and memory); latency and throughput are end to end,
// upstream send to target read.
const natsRelay = "obmux-nats"

// startNATSRelay starts the JetStream server, the account side and the
// edge, and waits until the edge consumes.
func (r *run) startNATSRelay(urls, extra []string) error {
	dir, err := os.MkdirTemp(r.rel.dir, "jetstream-")
	if err != nil {
		return err
	}
	ns, err := natstest.Run(dir, 0)
	if err != nil {
		os.RemoveAll(dir)
		return err
	}
	r.cleanups = append(r.cleanups, func() { ns.Stop(); os.RemoveAll(dir) })
	account, err := startRelay(relaySpec{name: natsRelay + " account side", path: r.rel.path, env: r.rel.env},
		r.up.URL, nil, append(extra, "OBMUX_NATS_URL="+ns.URL()), false)
	if err != nil {
		return err
	}
	r.cleanups = append(r.cleanups, account.stop)
	edge, err := startRelay(r.rel, ns.URL(), urls, append(extra, "OBMUX_NATS_CONSUMER=bench"), r.profileDir != "")
	if err != nil {
		return err
	}
	r.child = edge
	r.cleanups = append(r.cleanups, edge.stop)
	return waitConsuming(edge, account)
}

// waitConsuming waits until the edge's /readyz says it consumes the stream
// (events published before would not reach it).
func waitConsuming(edge, account *relayChild) error {
	deadline := time.Now().Add(60 * time.Second)
	for {
		if resp, err := http.Get("http://" + edge.metrics + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		for _, c := range []*relayChild{edge, account} {
			if err := c.alive(); err != nil {
				return err
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the edge does not consume after 60s:\n%s", edge.logTail(10))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// printNATS prints obmux over NATS beside obmux direct, a row per
// throughput or latency scenario that ran through both.
func printNATS(t *table) {
	header := false
	for _, s := range t.rows {
		if s.Kind != "throughput" && s.Kind != "latency" {
			continue
		}
		d, n := t.find("obmux", s), t.find(natsRelay, s)
		if n == nil {
			continue
		}
		if !header {
			t.section("Over NATS JetStream: upstream -> account-side obmux -> JetStream -> edge obmux -> targets, against obmux direct (CPU: the edge's)",
				"scenario\ttargets\tsize\tdirect ev/s\tNATS ev/s\tratio\tdirect p99 µs\tNATS p99 µs\tdirect CPU s/1e6 frames\tedge\t")
			header = true
		}
		what := s.Kind
		if s.Kind == "latency" {
			what = "latency @" + si(s.Rate) + "/s"
		}
		lat := func(r *result) string {
			if s.Kind != "latency" {
				return "-"
			}
			return col(r, p99)
		}
		fmt.Fprintf(t.tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", what, s.Targets, sizeName(s.Size),
			col(d, evs), col(n, evs), ratio(n, d, func(r *result) float64 { return r.EventsPerSec }),
			lat(d), lat(n), col(d, cpu), col(n, cpu))
	}
}
