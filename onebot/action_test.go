package onebot

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestBaseAction(t *testing.T) {
	for _, c := range []struct{ frame, want string }{
		{`{"action":"send_msg"}`, "send_msg"},
		{`{"action":"send_msg_async"}`, "send_msg"},
		{`{"action":"send_msg_rate_limited"}`, "send_msg"},
		{`{"action":"send_msg_async_rate_limited"}`, "send_msg"},
		{`{"action":"send_msg_rate_limited_async"}`, "send_msg"},
		{`{"action":"_async"}`, ""},
		{`{"action":"\u0073end_msg\u005fasync"}`, "send_msg"},
		{`{"action":"get_status" , "echo":1}`, "get_status"},
		{`{"action":7}`, "7"},
		{`{"echo":7}`, ""},
	} {
		f, err := Scan([]byte(c.frame))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(BaseAction([]byte(c.frame), f)); got != c.want {
			t.Errorf("%s: %q, want %q", c.frame, got, c.want)
		}
	}
}

func TestFailure(t *testing.T) {
	for _, c := range []struct {
		echo, want string
	}{
		{`{"seq":7}`, `{"status":"failed","retcode":1403,"data":null,"message":"no \"x\"","wording":"no \"x\"","echo":{"seq":7}}`},
		{"", `{"status":"failed","retcode":1403,"data":null,"message":"no \"x\"","wording":"no \"x\""}`},
	} {
		var echo []byte
		if c.echo != "" {
			echo = []byte(c.echo)
		}
		if got := string(Failure(RetcodeForbidden, `no "x"`, echo)); got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
}

// BaseAction never panics, never returns a name that still ends in a
// suffix it strips, and reads an action string as encoding/json does.
func FuzzBaseAction(f *testing.F) {
	for _, s := range []string{`{"action":"send_msg_async"}`, `{"action":"\u0073end_msg"}`, `{"action":"_async_rate_limited"}`,
		`{"action":7}`, `{"action":"a\"b"}`, `{"action":null}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := Scan(b)
		if err != nil {
			return
		}
		got := BaseAction(b, fr)
		if bytes.HasSuffix(got, []byte(SuffixAsync)) || bytes.HasSuffix(got, []byte(SuffixRateLimited)) {
			t.Fatalf("%s: %q keeps a suffix", b, got)
		}
		var s string
		// On valid UTF-8: encoding/json (and NapCat's JSON.parse) turn a
		// byte that is not into U+FFFD, which no action name holds.
		if raw := Raw(b, fr.Action); raw != nil && raw[0] == '"' && utf8.Valid(raw) && json.Unmarshal(raw, &s) == nil {
			for strings.HasSuffix(s, SuffixAsync) || strings.HasSuffix(s, SuffixRateLimited) {
				s = strings.TrimSuffix(strings.TrimSuffix(s, SuffixAsync), SuffixRateLimited)
			}
			if string(got) != s {
				t.Fatalf("%s: %q, encoding/json reads %q", b, got, s)
			}
		}
	})
}
