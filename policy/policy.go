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
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/obmux/obmux/onebot"
)

// Policy is one bot's policy, set from its variables (see Vars).
type Policy struct {
	// Groups, when not empty, lets an event with a group_id through only
	// from these groups; GroupsDeny never from these. UsersDeny holds back
	// every event whose user_id is one of these. Sorted.
	Groups, GroupsDeny, UsersDeny []int64
	// Filter, when not nil, lets through only the events it matches.
	Filter *onebot.Filter
	// NoSelfMessages holds back message_sent events and message events
	// whose user_id is the account's own (SELF_MESSAGES=false).
	NoSelfMessages bool
	// ReplayMaxAge, when not nil, replaces OBMUX_REPLAY_MAX_AGE for this
	// bot: an event older than this is not replayed after a reconnect, and
	// 0 turns replay off.
	ReplayMaxAge *time.Duration
	// MessageFormat is how this bot gets messages: as the upstream sends
	// them (empty), as arrays of segments or as CQ-code strings.
	MessageFormat onebot.MessageFormat
	// API is which API actions the bot may call (API_ALLOW, API_DENY).
	API ACL

	filterVar string // the suffix that set Filter
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
	{Suffix: "GROUPS", Forward: true, Set: func(p *Policy, v string) error { return ids(&p.Groups, v, "group") }},
	{Suffix: "GROUPS_DENY", Forward: true, Set: func(p *Policy, v string) error { return ids(&p.GroupsDeny, v, "group") }},
	{Suffix: "USERS_DENY", Forward: true, Set: func(p *Policy, v string) error { return ids(&p.UsersDeny, v, "QQ") }},
	{Suffix: "FILTER", Forward: true, Set: func(p *Policy, v string) error { return p.setFilter("FILTER", []byte(v)) }},
	{Suffix: "FILTER_FILE", Forward: true, Set: func(p *Policy, v string) error {
		b, err := os.ReadFile(v)
		if err != nil {
			return fmt.Errorf("cannot read the filter: %w", err)
		}
		return p.setFilter("FILTER_FILE", b)
	}},
	{Suffix: "SELF_MESSAGES", Forward: true, Set: func(p *Policy, v string) error {
		on, err := strconv.ParseBool(v)
		if err != nil {
			return errors.New("not a boolean (true or false)")
		}
		p.NoSelfMessages = !on
		return nil
	}},
	{Suffix: "API_ALLOW", Forward: true, Set: func(p *Policy, v string) error { return patterns(&p.API.Allow, v) }},
	{Suffix: "API_DENY", Forward: true, Set: func(p *Policy, v string) error { return patterns(&p.API.Deny, v) }},
	{Suffix: "MESSAGE_FORMAT", Forward: true, Set: func(p *Policy, v string) error {
		f, err := onebot.ParseMessageFormat(v)
		p.MessageFormat = f
		return err
	}},
	{Suffix: "REPLAY_MAX_AGE", Set: func(p *Policy, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d < 0 {
			return errors.New("not a duration (use Go syntax: 0 for no replay, 30s, 5m)")
		}
		p.ReplayMaxAge = &d
		return nil
	}},
}

// ids parses a comma-separated list of QQ numbers into *dst, sorted.
func ids(dst *[]int64, v, what string) error {
	*dst = nil
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		n, err := strconv.ParseInt(f, 10, 64)
		if err != nil || n <= 0 {
			return fmt.Errorf("%q is not a %s number (give them comma-separated: 111,222)", f, what)
		}
		*dst = append(*dst, n)
	}
	slices.Sort(*dst)
	return nil
}

func (p *Policy) setFilter(suffix string, src []byte) error {
	if p.filterVar != "" {
		return fmt.Errorf("set only one of _FILTER and _FILTER_FILE (_%s is set too)", p.filterVar)
	}
	f, err := onebot.ParseFilter(src)
	if err != nil {
		return fmt.Errorf("the filter does not parse: %w", err)
	}
	p.Filter, p.filterVar = f, suffix
	return nil
}

// filters reports whether p holds back any event.
func (p *Policy) filters() bool {
	return len(p.Groups)+len(p.GroupsDeny)+len(p.UsersDeny) > 0 || p.Filter != nil || p.NoSelfMessages
}

// inspects reports whether p looks into events at all.
func (p *Policy) inspects() bool { return p.filters() || p.MessageFormat != onebot.FormatAsIs }

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
