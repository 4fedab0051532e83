package wsconn

import (
	"regexp"
	"strings"
)

// Redacted stands for what redaction removed.
const Redacted = "…"

// urlQuery is a URL query in a text; at least one character follows the ?,
// so a question mark ending a sentence stays.
var urlQuery = regexp.MustCompile(`\?[^\s"'\\]+`)

// urlUserinfo is the userinfo of a URL in a text: after scheme://, up to
// the last @ before the host's end.
var urlUserinfo = regexp.MustCompile(`(?i)\b([a-z][a-z0-9+.-]*://)[^\s/?#"'\\]*@`)

// RedactText hides every URL query and every URL userinfo (user:password@)
// in s, such as an error's text, for logs, the health endpoints, the status
// page and configuration errors. It is the one redaction of obmux: every
// log line goes through it (see the logger of cmd/obmux).
func RedactText(s string) string {
	if strings.ContainsRune(s, '?') {
		s = urlQuery.ReplaceAllString(s, "?"+Redacted)
	}
	if strings.ContainsRune(s, '@') {
		s = urlUserinfo.ReplaceAllString(s, "${1}"+Redacted+"@")
	}
	return s
}

// RedactURL returns url without its query and userinfo, for logs. It works
// on malformed URLs too (a configuration error quotes one): the query is
// everything from the first ?, the userinfo everything after the scheme up
// to the last @ before the fragment (a password may hold a / that was not
// escaped; a path with an @ loses its host too, which is harmless).
func RedactURL(url string) string {
	if i := strings.IndexByte(url, '?'); i >= 0 {
		url = url[:i] + "?" + Redacted
	}
	rest, scheme := url, ""
	if i := strings.Index(url, "://"); i >= 0 {
		scheme, rest = url[:i+3], url[i+3:]
	}
	authority := rest
	if i := strings.IndexByte(rest, '#'); i >= 0 {
		authority = rest[:i]
	}
	if at := strings.LastIndexByte(authority, '@'); at >= 0 {
		rest = Redacted + rest[at:]
	}
	return scheme + rest
}
