package config

import (
	"strings"
	"testing"
)

// A misspelt variable is answered with the closest one obmux reads.
func TestSuggest(t *testing.T) {
	for _, c := range []struct{ name, want string }{
		{"OBMUX_UPSTREAM_TOKN", "OBMUX_UPSTREAM_TOKEN"},
		{"OBMUX_UPSTRAEM_URL", "OBMUX_UPSTREAM_URL"},
		{"OBMUX_SELFID", "OBMUX_SELF_ID"},
		{"OBMUX_METRIC_LISTEN", "OBMUX_METRICS_LISTEN"},
		{"obmux_upstream_token", "OBMUX_UPSTREAM_TOKEN"},
		{"OBMUX_Log_Level", "OBMUX_LOG_LEVEL"},
		{"OBMUX_TARGET_NB_UR", "OBMUX_TARGET_NB_URL"},
		{"OBMUX_TARGET_NB_TOKN", "OBMUX_TARGET_NB_TOKEN"},
		{"OBMUX_TARGET_MY_BOT_REPLAY_MAXAGE", "OBMUX_TARGET_MY_BOT_REPLAY_MAX_AGE"},
		{"OBMUX_FORWARD_TOKN", "OBMUX_FORWARD_TOKEN"},
		{"OBMUX_TOKEN", ""},
		{"OBMUX_SOMETHING_ELSE", ""},
		{"OBMUX_X", ""},
	} {
		if got := Suggest(c.name); got != c.want {
			t.Errorf("Suggest(%q) = %q, want %q", c.name, got, c.want)
		}
	}
	_, err := Load([]string{"OBMUX_UPSTREAM_TOKN=x", "obmux_self_id=1", "OBMUX_TARGET_A_URL=ws://a", "OBMUX_TARGET_A_TOKNE=x"})
	for _, want := range []string{
		"OBMUX_UPSTREAM_TOKN: not an obmux variable: did you mean OBMUX_UPSTREAM_TOKEN?",
		"obmux_self_id: not an obmux variable: did you mean OBMUX_SELF_ID?",
		"OBMUX_TARGET_A_TOKNE: not an obmux variable: did you mean OBMUX_TARGET_A_TOKEN?",
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
}
