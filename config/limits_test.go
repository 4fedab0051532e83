package config

import (
	"strings"
	"testing"
	"time"
)

// The memory bounds of issue 13: defaults, and values that are refused.
func TestMemoryLimitVariables(t *testing.T) {
	cfg, err := Load(nil)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.APIMaxInflightBytes != 16<<20 || cfg.ForwardMaxClients != 100 {
		t.Errorf("defaults: OBMUX_API_MAX_INFLIGHT_BYTES=%d OBMUX_FORWARD_MAX_CLIENTS=%d", cfg.APIMaxInflightBytes, cfg.ForwardMaxClients)
	}
	for _, c := range []struct{ env, want string }{
		{"OBMUX_API_MAX_INFLIGHT_BYTES=0", "OBMUX_API_MAX_INFLIGHT_BYTES=0: must be at least 1"},
		{"OBMUX_API_MAX_INFLIGHT_BYTES=lots", `OBMUX_API_MAX_INFLIGHT_BYTES="lots": not a whole number`},
		{"OBMUX_FORWARD_MAX_CLIENTS=0", "OBMUX_FORWARD_MAX_CLIENTS=0: must be at least 1"},
		{"OBMUX_FORWARD_MAX_CLIENTS=-3", "OBMUX_FORWARD_MAX_CLIENTS=-3: must be at least 1"},
	} {
		_, err := Load([]string{c.env})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.env, err, c.want)
		}
	}
	if cfg, err := Load([]string{"OBMUX_API_MAX_INFLIGHT_BYTES=1048576", "OBMUX_FORWARD_MAX_CLIENTS=5"}); err != nil ||
		cfg.APIMaxInflightBytes != 1<<20 || cfg.ForwardMaxClients != 5 {
		t.Errorf("set: %+v %v", cfg, err)
	}
}

// OBMUX_HTTP_TIMEOUT (issue 13, item 4): default, set, refused.
func TestHTTPTimeoutVariable(t *testing.T) {
	if cfg, err := Load(nil); err != nil || cfg.HTTPTimeout != 10*time.Second {
		t.Errorf("default: %v %v", cfg.HTTPTimeout, err)
	}
	if cfg, err := Load([]string{"OBMUX_HTTP_TIMEOUT=2s"}); err != nil || cfg.HTTPTimeout != 2*time.Second {
		t.Errorf("set: %v %v", cfg.HTTPTimeout, err)
	}
	for _, c := range []struct{ env, want string }{
		{"OBMUX_HTTP_TIMEOUT=0", "OBMUX_HTTP_TIMEOUT=0s: must be a positive duration"},
		{"OBMUX_HTTP_TIMEOUT=-1s", "OBMUX_HTTP_TIMEOUT=-1s: must be a positive duration"},
		{"OBMUX_HTTP_TIMEOUT=10", `OBMUX_HTTP_TIMEOUT="10": not a duration`},
	} {
		_, err := Load([]string{c.env})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.env, err, c.want)
		}
	}
}

// OBMUX_ALLOWED_HOSTS (issue 13, item 7): host names only, trimmed.
func TestAllowedHostsVariable(t *testing.T) {
	if cfg, err := Load(nil); err != nil || len(cfg.AllowedHosts) != 0 {
		t.Errorf("default: %q %v", cfg.AllowedHosts, err)
	}
	cfg, err := Load([]string{"OBMUX_ALLOWED_HOSTS=bot.example.com, obmux.lan,napcat_1,localhost."})
	if err != nil || strings.Join(cfg.AllowedHosts, "|") != "bot.example.com|obmux.lan|napcat_1|localhost." {
		t.Errorf("set: %q %v", cfg.AllowedHosts, err)
	}
	for _, v := range []string{"http://bot.example.com", "bot.example.com:3001", "bot.example.com/ws", "a,,b", "-bad.example",
		"bad-.example", "a b", "*.example.com", "a..b"} {
		_, err := Load([]string{"OBMUX_ALLOWED_HOSTS=" + v})
		want := `OBMUX_ALLOWED_HOSTS="` + v + `": must be host names separated by commas`
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", v, err, want)
		}
	}
}
