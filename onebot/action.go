package onebot

import "bytes"

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
