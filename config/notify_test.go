package config

import (
	"strings"
	"testing"
	"time"
)

func TestNotifyVariables(t *testing.T) {
	for _, tc := range []struct {
		env   []string
		url   string
		after time.Duration
		want  string // a problem it must report; "" for none
	}{
		{env: nil, after: time.Minute},
		{env: []string{"OBMUX_NOTIFY_URL=https://ntfy.sh/obmux-alerts"}, url: "https://ntfy.sh/obmux-alerts", after: time.Minute},
		{env: []string{"OBMUX_NOTIFY_URL=http://gotify:80/message?token=AbC", "OBMUX_NOTIFY_AFTER=30s"},
			url: "http://gotify:80/message?token=AbC", after: 30 * time.Second},
		{env: []string{"OBMUX_NOTIFY_AFTER=0"}, after: 0},
		{env: []string{"OBMUX_NOTIFY_AFTER="}, after: time.Minute},
		{env: []string{"OBMUX_NOTIFY_URL=ws://hook:80/x"}, want: `OBMUX_NOTIFY_URL="ws://hook:80/x": must be an http:// or https:// URL`},
		{env: []string{"OBMUX_NOTIFY_URL=https:///x"}, want: "OBMUX_NOTIFY_URL=\"https:///x\": has no host"},
		// The error shows no query: it may hold a token.
		{env: []string{"OBMUX_NOTIFY_URL=gotify/message?token=s3cret"}, want: `OBMUX_NOTIFY_URL="gotify/message?…": must be an http:// or https:// URL`},
		{env: []string{"OBMUX_NOTIFY_AFTER=-1s"}, want: "OBMUX_NOTIFY_AFTER=-1s: must be 0 (at once) or a positive duration"},
		{env: []string{"OBMUX_NOTIFY_AFTER=soon"}, want: `OBMUX_NOTIFY_AFTER="soon": not a duration`},
		{env: []string{"OBMUX_NOTIFY_URLS=https://x"}, want: "OBMUX_NOTIFY_URLS: not an obmux variable"},
	} {
		cfg, err := Load(tc.env)
		if tc.want == "" {
			if err != nil {
				t.Errorf("%v: %v", tc.env, err)
			} else if cfg.NotifyURL != tc.url || cfg.NotifyAfter != tc.after {
				t.Errorf("%v: url %q after %v, want %q %v", tc.env, cfg.NotifyURL, cfg.NotifyAfter, tc.url, tc.after)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one with %q", tc.env, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), "s3cret") {
			t.Errorf("%v: the error shows the token: %v", tc.env, err)
		}
	}
}
