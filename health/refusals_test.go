package health

import (
	"bytes"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestRefusalsLogOncePerAddressReasonAndMinute(t *testing.T) {
	reg := prometheus.NewRegistry()
	r := NewRefusals(reg)
	now := time.Unix(1000, 0)
	r.now = func() time.Time { return now }
	var buf bytes.Buffer
	log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	refuse := func(remote, path string, reason Refusal) string {
		buf.Reset()
		req, _ := http.NewRequest(http.MethodGet, "http://x"+path, nil)
		req.RemoteAddr = remote
		r.Refuse(log, ListenerForward, reason, req, "refused")
		return buf.String()
	}
	warn := func(s string) bool { return strings.Contains(s, "level=WARN") }
	if !warn(refuse("10.0.0.1:1000", "/", RefusedWrongToken)) {
		t.Error("the first refusal is not at warn")
	}
	for port := range 10 { // another port of the same address: the same peer
		if warn(refuse("10.0.0.1:"+strconv.Itoa(2000+port), "/", RefusedWrongToken)) {
			t.Fatal("a repeat within the minute is at warn")
		}
	}
	if !warn(refuse("10.0.0.1:1000", "/", RefusedMissingToken)) || !warn(refuse("10.0.0.2:1000", "/", RefusedWrongToken)) {
		t.Error("another reason or address is not at warn")
	}
	now = now.Add(time.Minute)
	if got := refuse("10.0.0.1:1000", "/", RefusedWrongToken); !warn(got) || !strings.Contains(got, "refused_meanwhile=10") {
		t.Errorf("after a minute: %s", got)
	}
	// Every distinct wrong path once, up to the bound; past it, the paths
	// of one address share one line a minute.
	for i := range wrongPaths + 10 {
		path := "/p" + strings.Repeat("x", i)
		got := refuse("10.0.0.3:1", path, RefusedWrongPath)
		if want := i <= wrongPaths; warn(got) != want {
			t.Fatalf("wrong path %d: warn=%v, want %v", i, warn(got), want)
		}
	}
	if got := testutil.ToFloat64(r.counter.WithLabelValues(ListenerForward, string(RefusedWrongToken))); got != 13 {
		t.Errorf("wrong_token counted %v, want 13", got)
	}
	// Many addresses: bounded memory, all counted.
	const many = refusalKeys + 100
	for i := range many {
		refuse("10.1."+strconv.Itoa(i/256)+"."+strconv.Itoa(i%256)+":1", "/", RefusedWrongToken)
	}
	if len(r.seen) > refusalKeys {
		t.Errorf("%d pairs remembered, over %d", len(r.seen), refusalKeys)
	}
	if got := testutil.ToFloat64(r.counter.WithLabelValues(ListenerForward, string(RefusedWrongToken))); got != 13+many {
		t.Errorf("wrong_token counted %v", got)
	}
	now = now.Add(time.Minute) // the pairs' minute is over: room again
	if !warn(refuse("10.2.0.1:1", "/", RefusedWrongToken)) {
		t.Error("a new address after the minute is not at warn")
	}
	var nilRefusals *Refusals
	buf.Reset()
	req, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
	nilRefusals.Refuse(log, ListenerForward, RefusedWrongToken, req, "refused")
	if !warn(buf.String()) {
		t.Error("a nil Refusals does not log at warn")
	}
}
