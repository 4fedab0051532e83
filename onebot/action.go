package onebot

import (
	"bytes"
	"fmt"
	"strings"
)

// Action suffixes of OneBot v11: the same action, answered at once
// (status "async") or queued by the implementation.
const (
	SuffixAsync       = "_async"
	SuffixRateLimited = "_rate_limited"
)

// BaseAction returns the action of API request b (scanned as f) as the
// implementation reads it, with the _async and _rate_limited suffixes
// stripped (repeatedly, so that no order of them escapes a rule): a JSON
// string is unescaped ("\u0073end_msg" is send_msg), anything else is its
// raw JSON, a missing action nil. It allocates only for a string with
// escapes.
func BaseAction(b []byte, f Frame) []byte {
	name := StringForm(b, f.Action)
	for {
		switch {
		case bytes.HasSuffix(name, []byte(SuffixAsync)):
			name = name[:len(name)-len(SuffixAsync)]
		case bytes.HasSuffix(name, []byte(SuffixRateLimited)):
			name = name[:len(name)-len(SuffixRateLimited)]
		default:
			return name
		}
	}
}

// CheckAction says what is wrong with name as an action to configure (with
// * globs when glob is true): it must be letters, digits, _ . and -, and
// must not end in a suffix that BaseAction strips, since it could never
// match.
func CheckAction(name string, glob bool) error {
	for _, c := range []byte(name) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-' || glob && c == '*') {
			if glob {
				return fmt.Errorf("%q is not an action name or pattern (letters, digits, _ . - and * globs, comma-separated: get_*,send_group_msg)", name)
			}
			return fmt.Errorf("%q is not an action name (letters, digits, _ . -, comma-separated: send_msg,send_group_msg)", name)
		}
	}
	for _, s := range []string{SuffixAsync, SuffixRateLimited} {
		if strings.HasSuffix(name, s) {
			return fmt.Errorf("%q: the %s suffix is stripped from an action before it is matched, so this never matches: write %q (it covers %s too)",
				name, s, strings.TrimSuffix(name, s), name)
		}
	}
	return nil
}
