package policy

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/obmux/obmux/onebot"
)

func TestGlob(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		{"send_msg", "send_msg", true},
		{"send_msg", "send_msgs", false},
		{"send_msg", "send_ms", false},
		{"send_msg", "Send_msg", false}, // case matters, as it does upstream
		{"get_*", "get_group_list", true},
		{"get_*", "get_", true},
		{"get_*", "get", false},
		{"get_*", "xget_status", false},
		{"*", "", true},
		{"*", "anything", true},
		{"", "", true},
		{"", "a", false},
		{"*_msg", "send_group_msg", true},
		{"*_msg", "send_group_msg_x", false},
		{"send_*_msg", "send_group_msg", true},
		{"send_*_msg", "send_msg", false},
		{"send_*_msg", "send__msg", true},
		{"*group*", "set_group_kick", true},
		{"*group*", "set_kick", false},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "abcbc", true},
		{"a*b*c", "acb", false},
		{"**", "x", true},
		{"a*a*a*a*b", strings.Repeat("a", 64), false}, // backtracking stays linear
		{".handle_quick_operation", ".handle_quick_operation", true},
	} {
		if got := Glob(c.pattern, []byte(c.name)); got != c.want {
			t.Errorf("Glob(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

// The ACL as the issue says: DENY wins, an empty ALLOW allows all, and the
// action is matched with its _async/_rate_limited suffixes stripped (so
// send_msg_async is denied by send_msg, and get_status_async is allowed
// by get_*). Escapes in the action's JSON string do not get past a rule.
func TestPermits(t *testing.T) {
	readOnly := parse(t, map[string]string{"API_ALLOW": "get_*,can_*"})
	noKick := parse(t, map[string]string{"API_DENY": "set_group_kick, set_group_ban,set_group_whole_ban"})
	both := parse(t, map[string]string{"API_ALLOW": "get_*,send_*", "API_DENY": "send_private_*,get_cookies"})
	denyAll := parse(t, map[string]string{"API_DENY": "*"})
	for _, c := range []struct {
		p      *Policy
		action string // the raw JSON of "action"
		want   bool
	}{
		{&Policy{}, `"set_group_kick"`, true},
		{readOnly, `"get_group_list"`, true},
		{readOnly, `"can_send_image"`, true},
		{readOnly, `"send_group_msg"`, false},
		{readOnly, `"get_status_async"`, true},
		{readOnly, `"send_msg_rate_limited"`, false},
		{readOnly, `"set_group_kick"`, false},
		{readOnly, `"Get_status"`, false},
		{readOnly, `"\u0067et_status"`, true},
		{noKick, `"set_group_kick"`, false},
		{noKick, `"set_group_kick_async"`, false},
		{noKick, `"set_group_ban_rate_limited"`, false},
		{noKick, `"set_group_ban_async_rate_limited"`, false},
		{noKick, `"set_group_kick_rate_limited_async"`, false},
		{noKick, `"set_group_\u006bick"`, false},
		{noKick, `"set_group_kick_members"`, true},
		{noKick, `"send_msg"`, true},
		{both, `"send_group_msg"`, true},
		{both, `"send_private_msg"`, false},
		{both, `"get_cookies"`, false},
		{both, `"get_cookies_async"`, false},
		{both, `"get_status"`, true},
		{both, `"set_group_card"`, false},
		{both, `12`, false},
		{denyAll, `"get_status"`, false},
		{&Policy{}, `12`, true}, // not a string: the upstream answers it
	} {
		frame := []byte(`{"action":` + c.action + `,"echo":1}`)
		f, err := onebot.Scan(frame)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.p.API.Permits(onebot.BaseAction(frame, f)); got != c.want {
			t.Errorf("allow %q deny %q: %s permitted %v, want %v", c.p.API.Allow, c.p.API.Deny, c.action, got, c.want)
		}
	}
}

func TestACLVarErrors(t *testing.T) {
	for _, c := range []struct{ suffix, value, want string }{
		{"API_ALLOW", "get_*,send msg", `"send msg" is not an action name or pattern`},
		{"API_DENY", "set_group_kick;set_group_ban", `"set_group_kick;set_group_ban" is not an action name`},
		{"API_DENY", "send_msg_async", `the _async suffix is stripped from an action before it is matched, so this never matches: write "send_msg"`},
		{"API_ALLOW", "get_*_rate_limited", `write "get_*"`},
		{"API_ALLOW", `get_*,"x",send_msg_async`, `"\"x\"" is not an action name or pattern (letters, digits, _ . - and * globs, comma-separated: get_*,send_group_msg); "send_msg_async": the _async suffix`},
		{"API_DENY", "发消息", "is not an action name"},
	} {
		row, _ := Lookup(c.suffix)
		err := row.Set(&Policy{}, c.value)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s=%s: %v, want %q", c.suffix, c.value, err, c.want)
		}
	}
	for _, ok := range []string{"", " , ", "get_*, can_* ", ".handle_quick_operation,_get_model_show,ArkSharePeer", "*"} {
		row, _ := Lookup("API_ALLOW")
		if err := row.Set(&Policy{}, ok); err != nil {
			t.Errorf("API_ALLOW=%q: %v", ok, err)
		}
	}
}

// The per-call cost of the ACL: a read-only bot's allow list and a deny list,
// matched against an action with a suffix and a refused one.
func BenchmarkACL(b *testing.B) {
	p := parse(b, map[string]string{"API_ALLOW": "get_*,can_*,send_*", "API_DENY": "set_group_kick,set_group_ban,delete_*,send_private_*"})
	frames := [][]byte{[]byte(`{"action":"send_group_msg_async","params":{"group_id":1,"message":"hi"},"echo":1}`),
		[]byte(`{"action":"set_group_kick","params":{"group_id":1,"user_id":2},"echo":2}`)}
	var fs []onebot.Frame
	for _, fr := range frames {
		f, _ := onebot.Scan(fr)
		fs = append(fs, f)
	}
	b.ReportAllocs()
	for b.Loop() {
		for i, fr := range frames {
			if p.API.Permits(onebot.BaseAction(fr, fs[i])) != (i == 0) {
				b.Fatal("wrong answer")
			}
		}
	}
}

// Glob agrees with the regular expression its pattern stands for (each *
// as (?s:.*), everything else literal), whatever the pattern and name.
func FuzzGlob(f *testing.F) {
	for _, s := range [][2]string{{"get_*", "get_status"}, {"*_msg", "send_msg"}, {"a*b*c", "abcbc"}, {"**", ""},
		{"send_*_msg", "send__msg"}, {"a*a*a*b", "aaaaaaaaaaaaaaaa"}, {"*", "\xff"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, name string) {
		if !utf8.ValidString(pattern) || !utf8.ValidString(name) {
			return // regexp matches runes, Glob bytes: they agree on valid UTF-8
		}
		var re strings.Builder
		re.WriteString(`^`)
		for i, part := range strings.Split(pattern, "*") {
			if i > 0 {
				re.WriteString(`(?s:.*)`)
			}
			re.WriteString(regexp.QuoteMeta(part))
		}
		re.WriteString(`$`)
		want := regexp.MustCompile(re.String()).MatchString(name)
		if got := Glob(pattern, []byte(name)); got != want {
			t.Errorf("Glob(%q, %q) = %v, the regexp %s says %v", pattern, name, got, re.String(), want)
		}
	})
}
