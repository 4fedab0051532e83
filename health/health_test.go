package health

import (
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
