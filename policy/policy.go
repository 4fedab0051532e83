// Package policy is what each bot gets and may do: which upstream events
// reach it, in which message format, whether it is replayed what it missed,
// and which API calls it may make. Every reverse-WS target has its own
// Policy, read from OBMUX_TARGET_<NAME>_<SUFFIX>; one Policy, read from
// OBMUX_FORWARD_<SUFFIX>, serves every forward-WS client. The suffixes are
// the rows of Vars. The zero Policy lets everything through unchanged.
package policy

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Policy is one bot's policy, set from its variables (see Vars).
type Policy struct {
	// ReplayMaxAge, when not nil, replaces OBMUX_REPLAY_MAX_AGE for this
	// bot: an event older than this is not replayed after a reconnect, and
	// 0 turns replay off.
	ReplayMaxAge *time.Duration
}

// Var is one per-bot variable: OBMUX_TARGET_<NAME>_<Suffix> for a target,
// OBMUX_FORWARD_<Suffix> for the forward-WS clients when Forward is true.
type Var struct {
	Suffix string
	// Forward says whether the variable applies to forward-WS clients too.
	Forward bool
	// Set parses value into p. Its error says what is wrong with the value;
	// the caller names the variable.
	Set func(p *Policy, value string) error
}

// Vars are the per-bot variables, one row each.
var Vars = []Var{
	{Suffix: "REPLAY_MAX_AGE", Set: func(p *Policy, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return errors.New("not a duration (use Go syntax: 0 for no replay, 30s, 5m)")
		}
		p.ReplayMaxAge = &d
		return nil
	}},
}

// Suffixes returns the suffixes of Vars, for forward-WS clients only when
// forward is true.
func Suffixes(forward bool) []string {
	var out []string
	for _, v := range Vars {
		if !forward || v.Forward {
			out = append(out, v.Suffix)
		}
	}
	return out
}

// Lookup returns the row of suffix.
func Lookup(suffix string) (Var, bool) {
	for _, v := range Vars {
		if v.Suffix == suffix {
			return v, true
		}
	}
	return Var{}, false
}

// Problem formats what is wrong with variable name=value: short values are
// quoted, long ones (an inline filter) only measured.
func Problem(name, value string, err error) string {
	if len(value) > 80 || strings.ContainsAny(value, "\n") {
		return fmt.Sprintf("%s (%d bytes): %v", name, len(value), err)
	}
	return fmt.Sprintf("%s=%q: %v", name, value, err)
}
