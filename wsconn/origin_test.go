package wsconn

import (
	"net/http"
	"testing"
)

func TestOriginPolicy(t *testing.T) {
	p := OriginPolicy{AllowedHosts: []string{"Bot.Example", "obmux.lan."}}
	for _, c := range []struct {
		host, origin string
		ok           bool
	}{
		{"evil.example:3001", "", true}, // no Origin: not a browser
		{"evil.example:3001", "http://evil.example:3001", false},
		{"evil.example", "http://evil.example", false},
		{"127.0.0.1:3001", "http://evil.example:3001", false},
		{"127.0.0.1:3001", "null", false},
		{"127.0.0.1:3001", "::", false},
		{"127.0.0.1:3001", "http://127.0.0.1:3001", true},
		{"10.0.0.5:3001", "https://10.0.0.5:3001", true},
		{"[::1]:3001", "http://[::1]:3001", true},
		{"[fe80::1]:3001", "http://[fe80::1]:3001", true},
		{"localhost:3001", "http://LOCALHOST:3001", true},
		{"app.localhost:3001", "http://app.localhost:3001", true},
		{"localhost.evil.example:3001", "http://localhost.evil.example:3001", false},
		{"bot.example:3001", "https://bot.example:3001", true},
		{"BOT.example.:3001", "https://BOT.example.:3001", true},
		{"obmux.lan", "http://obmux.lan", true},
		{"sub.bot.example", "http://sub.bot.example", false},
	} {
		r, _ := http.NewRequest(http.MethodGet, "http://x/", nil)
		r.Host = c.host
		if c.origin != "" {
			r.Header.Set("Origin", c.origin)
		}
		if err := p.Check(r); (err == nil) != c.ok {
			t.Errorf("Host %q Origin %q: %v, want ok=%v", c.host, c.origin, err, c.ok)
		}
	}
}
