package natsbus

import (
	"strconv"
	"strings"

	"github.com/obmux/obmux/onebot"
)

// Subject prefix and the names below it.
const (
	root         = "onebot"
	eventToken   = "event"
	statusToken  = "status"
	apiToken     = "api"
	unknownToken = "unknown"
)

// EventSubject returns the subject of the upstream event frame b of the
// account selfID (the frame's own self_id wins when it has one):
// onebot.<self_id>.event.<post_type>[.<message_type|notice_type|request_type>].
// It reports false for meta events and frames without a post_type.
func EventSubject(selfID int64, b []byte) (string, bool) {
	var post, detail string
	id := selfID
	_ = onebot.Members(b, func(key []byte, _, val onebot.Span) error {
		switch string(key) {
		case "post_type":
			post = stringValue(b, val)
		case "message_type", "notice_type", "request_type":
			detail = stringValue(b, val)
		case "self_id":
			if n, ok := onebot.Int(b, val); ok && n > 0 {
				id = n
			}
		}
		return nil
	})
	if post == "" || post == "meta_event" {
		return "", false
	}
	s := root + "." + strconv.FormatInt(id, 10) + "." + eventToken + "." + token(post)
	if detail != "" {
		s += "." + token(detail)
	}
	return s, true
}

// StatusSubject is where the account's online changes are published.
func StatusSubject(selfID int64) string {
	return root + "." + strconv.FormatInt(selfID, 10) + "." + statusToken
}

// APISubject is where the account side serves API calls.
func APISubject(selfID int64) string {
	return root + "." + strconv.FormatInt(selfID, 10) + "." + apiToken
}

// streamSubjects are what the stream obmux creates captures: events and
// status, but not the API subject (a stream capturing a request subject
// would answer the request with its own publish acknowledgement).
var streamSubjects = []string{root + ".*." + eventToken + ".>", root + ".*." + statusToken}

// stringValue returns a JSON string value without its quotes, or "" when
// the value is not a plain string.
func stringValue(b []byte, s onebot.Span) string {
	raw := onebot.Raw(b, s)
	if len(raw) < 2 || raw[0] != '"' || raw[len(raw)-1] != '"' {
		return ""
	}
	return string(raw[1 : len(raw)-1])
}

// DefaultConsumer is the durable consumer name of an edge on host:
// obmux-edge-<host>, the host name made one safe name as a subject token is.
func DefaultConsumer(host string) string {
	if host == "" {
		host = "default"
	}
	return "obmux-edge-" + token(host)
}

// token makes s one safe subject token: letters, digits, '_' and '-' stay,
// anything else (a '.', a wildcard, a space, an escape) becomes '_'.
func token(s string) string {
	if s == "" {
		return unknownToken
	}
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '_', r == '-':
			return r
		}
		return '_'
	}, s)
}
