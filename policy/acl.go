package policy

import (
	"errors"
	"strings"

	"github.com/obmux/obmux/onebot"
)

// ACL is which API actions a bot may call: API_ALLOW and API_DENY, lists of
// action names with * globs, matched against the action with its _async and
// _rate_limited suffixes stripped. DENY wins over ALLOW; an empty ALLOW
// allows all. The zero ACL permits everything.
type ACL struct {
	Allow, Deny []string
}

// Permits reports whether a bot with a may call action, given as
// onebot.BaseAction returns it (suffixes stripped). It does not allocate.
func (a *ACL) Permits(action []byte) bool {
	for _, p := range a.Deny {
		if Glob(p, action) {
			return false
		}
	}
	if len(a.Allow) == 0 {
		return true
	}
	for _, p := range a.Allow {
		if Glob(p, action) {
			return true
		}
	}
	return false
}

// Glob reports whether name matches pattern, in which * stands for any run
// of bytes (none included) and every other byte for itself; case matters,
// as it does to the implementations.
func Glob(pattern string, name []byte) bool {
	// The classic greedy matcher with one backtrack point: linear for one
	// *, never exponential.
	p, n := 0, 0
	star, from := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, from = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			from++
			p, n = star+1, from
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// patterns parses a comma-separated list of action patterns into *dst.
func patterns(dst *[]string, v string) error {
	*dst = nil
	var bad []string
	for f := range strings.SplitSeq(v, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if err := checkPattern(f); err != nil {
			bad = append(bad, err.Error())
			continue
		}
		*dst = append(*dst, f)
	}
	if len(bad) > 0 {
		return errors.New(strings.Join(bad, "; "))
	}
	return nil
}

// checkPattern says what is wrong with one action pattern.
func checkPattern(p string) error { return onebot.CheckAction(p, true) }
