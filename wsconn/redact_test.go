package wsconn

import "testing"

func TestRedact(t *testing.T) {
	for _, c := range []struct{ in, url, text string }{
		{"ws://h:1/p", "ws://h:1/p", "ws://h:1/p"},
		{"ws://h/p?access_token=s3", "ws://h/p?…", "ws://h/p?…"},
		{"ws://u:pw@h/p?access_token=s3", "ws://…@h/p?…", "ws://…@h/p?…"},
		{"wss://tok@h", "wss://…@h", "wss://…@h"},
		{"ws://u:p@ss@h/x@y", "ws://…@y", "ws://…@h/x@y"},
		{"ws://u:pa/ss@h/", "ws://…@h/", "ws://u:pa/ss@h/"},   // malformed: RedactURL is the one for values
		{"ws://u:p w@h/?q", "ws://…@h/?…", "ws://u:p w@h/?…"}, // malformed: RedactURL is the one for values
		{`dial "ws://u:pw@h/?t=1": refused`, `dial "ws://…@h/?…`, `dial "ws://…@h/?…": refused`},
		{"is it running?", "is it running?…", "is it running?"},
		{"mail a@b.example", "…@b.example", "mail a@b.example"}, // RedactURL: no scheme, still no userinfo
	} {
		if got := RedactURL(c.in); got != c.url {
			t.Errorf("RedactURL(%q) = %q, want %q", c.in, got, c.url)
		}
		if got := RedactText(c.in); got != c.text {
			t.Errorf("RedactText(%q) = %q, want %q", c.in, got, c.text)
		}
	}
}
