package health

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestReadyzFollowsReadiness(t *testing.T) {
	reg := prometheus.NewRegistry()
	mon := NewMonitor(NewMetrics(reg, "test"))
	st := mon.Track(RoleTarget, "nonebot")
	ready := false
	h := mon.Handler(func() bool { return ready }, nil)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, _ := get("/readyz"); code != 503 {
		t.Errorf("/readyz %d, want 503", code)
	}
	ready = true
	st.Up()
	code, body := get("/readyz")
	if code != 200 || !strings.Contains(body, `"role":"target","name":"nonebot","connected":true`) {
		t.Errorf("/readyz %d %s", code, body)
	}
	st.Down(ReasonKeepaliveTimeout, nil)
	if got := testutil.ToFloat64(st.M.Disconnects[ReasonKeepaliveTimeout]); got != 1 {
		t.Errorf("disconnects = %v", got)
	}
	if got := testutil.ToFloat64(st.M.Up); got != 0 {
		t.Errorf("up = %v", got)
	}
	st.Untrack()
	if _, body := get("/healthz"); strings.Contains(body, "nonebot") {
		t.Errorf("untracked connection still listed: %s", body)
	}
}

// The health document tells how many targets are up and why one is not
// dialed; readiness (the HTTP status) stays about the upstream.
func TestHealthCountsTargets(t *testing.T) {
	mon := NewMonitor(NewMetrics(nil, "test"))
	a, b := mon.Track(RoleTarget, "a"), mon.Track(RoleTarget, "b")
	mon.Track(RoleClient, "/")
	ready := true
	h := mon.Handler(func() bool { return ready }, nil)
	get := func(path string) (int, Health) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		var doc Health
		if err := json.Unmarshal(rec.Body.Bytes(), &doc); err != nil {
			t.Fatalf("%s: %v: %s", path, err, rec.Body)
		}
		return rec.Code, doc
	}
	b.Waiting("waiting for the upstream: self_id unknown")
	a.Up()
	code, doc := get("/readyz")
	if code != 200 || doc.Status != "degraded" || doc.TargetsConnected != "1 of 2" || doc.TargetsUp != 1 || doc.TargetsTotal != 2 {
		t.Errorf("/readyz %d %+v", code, doc)
	}
	if c := doc.Connections[1]; c.Name != "b" || c.Waiting != "waiting for the upstream: self_id unknown" {
		t.Errorf("b: %+v", c)
	}
	b.Waiting("")
	b.Up()
	if code, doc := get("/readyz"); code != 200 || doc.Status != "ok" || doc.TargetsConnected != "2 of 2" || doc.Connections[1].Waiting != "" {
		t.Errorf("/readyz %d %+v", code, doc)
	}
	ready = false
	a.Down(ReasonClosedByPeer, nil)
	if code, doc := get("/readyz"); code != 503 || doc.Status != "unavailable" || doc.TargetsConnected != "1 of 2" {
		t.Errorf("/readyz %d %+v", code, doc)
	}
	if code, doc := get("/healthz"); code != 200 || doc.Status != "degraded" {
		t.Errorf("/healthz %d %+v", code, doc)
	}
}
