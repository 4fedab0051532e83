package onebot

import (
	"crypto/subtle"
	"net/http"
	"strings"
)

// Authorize checks a OneBot access token on an HTTP upgrade request, as the
// OneBot v11 specification and go-cqhttp do: from "Authorization: Bearer <t>"
// (or "Token <t>", the scheme in any case) or the access_token query
// parameter. It returns 0 when the token is right or none is required, else
// the status to refuse with: 401 when no token was given, 403 when it is
// wrong. Tokens are compared in constant time.
func Authorize(r *http.Request, token string) int {
	if token == "" {
		return 0
	}
	given, ok := "", false
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, t, found := strings.Cut(h, " ")
		if found && (strings.EqualFold(scheme, "Bearer") || strings.EqualFold(scheme, "Token")) {
			given, ok = strings.TrimSpace(t), true
		} else {
			given, ok = h, true
		}
	} else if q := r.URL.Query(); q.Has("access_token") {
		given, ok = q.Get("access_token"), true
	}
	if !ok {
		return http.StatusUnauthorized
	}
	if subtle.ConstantTimeCompare([]byte(given), []byte(token)) != 1 {
		return http.StatusForbidden
	}
	return 0
}
