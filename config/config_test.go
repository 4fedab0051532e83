package config

import (
	"strings"
	"testing"
	"time"
)

// Per-bot variables: a suffix with _ is not read as part of the name, the
// forward clients have theirs, and every problem is named at once.
func TestPolicyVariables(t *testing.T) {
	cfg, err := Load([]string{"OBMUX_TARGET_A_URL=ws://a", "OBMUX_TARGET_A_REPLAY_MAX_AGE=10s",
		"OBMUX_TARGET_MY_REPLAY_URL=ws://b"})
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Targets) != 2 || cfg.Targets[0].Name != "a" || cfg.Targets[1].Name != "my_replay" {
		t.Fatalf("targets %+v", cfg.Targets)
	}
	if d := cfg.Targets[0].Policy.ReplayMaxAge; d == nil || *d != 10*time.Second {
		t.Errorf("REPLAY_MAX_AGE not read: %v", d)
	}
	if d := cfg.Targets[1].Policy.ReplayMaxAge; d != nil {
		t.Errorf("a target without REPLAY_MAX_AGE got %v (want the global default)", *d)
	}

	_, err = Load([]string{"OBMUX_TARGET_A_URL=ws://a", "OBMUX_TARGET_A_REPLAY_MAX_AGE=soon",
		"OBMUX_TARGET_B_REPLAY_MAX_AGE=1s", "OBMUX_FORWARD_REPLAY_MAX_AGE=1s", "OBMUX_TARGET_C_URL=ws://c", "OBMUX_TARGET_C_REPLAY_MAXAGE=1s"})
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		`OBMUX_TARGET_A_REPLAY_MAX_AGE="soon": not a duration`,
		"OBMUX_TARGET_B_URL: not set, but OBMUX_TARGET_B_REPLAY_MAX_AGE is",
		"OBMUX_FORWARD_REPLAY_MAX_AGE: not an obmux variable",
		"OBMUX_TARGET_C_REPLAY_MAXAGE: not an obmux variable",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	// Filters: every problem at once, each naming its variable (and, for
	// the filter language, the position).
	_, err = Load([]string{"OBMUX_TARGET_A_URL=ws://a", "OBMUX_TARGET_A_GROUPS=1,x", "OBMUX_TARGET_A_GROUPS_DENY=0",
		`OBMUX_TARGET_A_FILTER={"raw_message":{".regex":"("}}`, "OBMUX_TARGET_A_SELF_MESSAGES=nah",
		`OBMUX_FORWARD_FILTER={".nope":{}}`, "OBMUX_FORWARD_USERS_DENY=q", "OBMUX_TARGET_A_FILTER_FILE=/nonexistent"})
	for _, want := range []string{
		`OBMUX_TARGET_A_GROUPS="1,x": "x" is not a group number`,
		`OBMUX_TARGET_A_GROUPS_DENY="0"`,
		`OBMUX_TARGET_A_FILTER="{\"raw_message\":{\".regex\":\"(\"}}": the filter does not parse: line 1, column 26`,
		`OBMUX_TARGET_A_SELF_MESSAGES="nah": not a boolean`,
		`OBMUX_FORWARD_FILTER="{\".nope\":{}}": the filter does not parse: line 1, column 2 (byte 1): unknown operator .nope`,
		`OBMUX_FORWARD_USERS_DENY="q"`,
		`OBMUX_TARGET_A_FILTER_FILE="/nonexistent": `,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	// API permissions: every bad pattern named at once, the API_ suffixes
	// read for targets (even a target named API) and forward clients.
	cfg, err = Load([]string{"OBMUX_TARGET_A_URL=ws://a", "OBMUX_TARGET_A_API_ALLOW=get_*,can_*",
		"OBMUX_TARGET_API_URL=ws://b", "OBMUX_TARGET_API_API_DENY=set_group_kick", "OBMUX_FORWARD_API_DENY=send_*"})
	if err != nil {
		t.Fatal(err)
	}
	if a := cfg.Targets[0].Policy.API.Allow; len(a) != 2 || a[1] != "can_*" {
		t.Errorf("OBMUX_TARGET_A_API_ALLOW read as %q", a)
	}
	if d := cfg.Targets[1].Policy.API.Deny; cfg.Targets[1].Name != "api" || len(d) != 1 || d[0] != "set_group_kick" {
		t.Errorf("OBMUX_TARGET_API_API_DENY read as %s %q", cfg.Targets[1].Name, d)
	}
	if d := cfg.Forward.API.Deny; len(d) != 1 || d[0] != "send_*" {
		t.Errorf("OBMUX_FORWARD_API_DENY read as %q", d)
	}
	_, err = Load([]string{"OBMUX_TARGET_A_URL=ws://a", "OBMUX_TARGET_A_API_ALLOW=get_* can_*", "OBMUX_TARGET_A_API_DENY=send_msg_async",
		"OBMUX_FORWARD_API_ALLOW=get/status", "OBMUX_FORWARD_API_DENY=*_rate_limited", "OBMUX_TARGET_A_API_ALOW=get_*"})
	for _, want := range []string{
		`OBMUX_TARGET_A_API_ALLOW="get_* can_*": "get_* can_*" is not an action name or pattern`,
		`OBMUX_TARGET_A_API_DENY="send_msg_async": "send_msg_async": the _async suffix is stripped`,
		`OBMUX_FORWARD_API_ALLOW="get/status": "get/status" is not an action name`,
		`OBMUX_FORWARD_API_DENY="*_rate_limited": "*_rate_limited": the _rate_limited suffix is stripped`,
		`OBMUX_TARGET_A_API_ALOW: not an obmux variable`,
	} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error does not say %q:\n%v", want, err)
		}
	}
	if why := CheckName("OBMUX_TARGET_X_REPLAY_MAX_AGE"); why != "" {
		t.Errorf("CheckName refuses a policy variable: %s", why)
	}
}

// Known holds only names obmux reads: not the "-" of fields that come from
// elsewhere (Targets, Forward).
func TestKnownHasNoPlaceholder(t *testing.T) {
	if Known()["OBMUX_-"] {
		t.Error(`Known() has "OBMUX_-" (the env:"-" tag of a field)`)
	}
	if why := CheckName("OBMUX_-"); why == "" {
		t.Error(`CheckName accepts "OBMUX_-"`)
	}
}
