package policy

import (
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func parse(t testing.TB, vars map[string]string) *Policy {
	t.Helper()
	p := &Policy{}
	for k, v := range vars {
		row, ok := Lookup(k)
		if !ok {
			t.Fatalf("no row %s", k)
		}
		if err := row.Set(p, v); err != nil {
			t.Fatalf("%s=%s: %v", k, v, err)
		}
	}
	return p
}

const (
	groupMsg   = `{"self_id":10001,"post_type":"message","message_type":"group","group_id":111,"user_id":20002,"raw_message":"hi"}`
	otherGroup = `{"self_id":10001,"post_type":"notice","notice_type":"group_increase","group_id":333,"user_id":20003}`
	private    = `{"self_id":10001,"post_type":"message","message_type":"private","user_id":444,"raw_message":"yo"}`
	ownMsg     = `{"self_id":10001,"post_type":"message","message_type":"group","group_id":111,"user_id":10001}`
	sent       = `{"self_id":10001,"post_type":"message_sent","message_type":"group","group_id":111,"user_id":10001}`
	nullGroup  = `{"self_id":10001,"post_type":"notice","notice_type":"friend_add","group_id":null,"user_id":20002}`
)

// Each variable holds back what the issue says, and they combine with AND.
func TestPass(t *testing.T) {
	all := []string{groupMsg, otherGroup, private, ownMsg, sent, nullGroup}
	for _, c := range []struct {
		vars map[string]string
		pass []string
	}{
		{map[string]string{}, all},
		{map[string]string{"GROUPS": "111, 222"}, []string{groupMsg, private, ownMsg, sent, nullGroup}},
		{map[string]string{"GROUPS_DENY": "111"}, []string{otherGroup, private, nullGroup}},
		{map[string]string{"USERS_DENY": "444,20003"}, []string{groupMsg, ownMsg, sent, nullGroup}},
		{map[string]string{"SELF_MESSAGES": "false"}, []string{groupMsg, otherGroup, private, nullGroup}},
		{map[string]string{"SELF_MESSAGES": "true"}, all},
		{map[string]string{"FILTER": `{"post_type":"message"}`}, []string{groupMsg, private, ownMsg}},
		{map[string]string{"GROUPS": "111", "USERS_DENY": "20002", "SELF_MESSAGES": "false", "FILTER": `{"raw_message":{".neq":"yo"}}`},
			[]string{}},
		{map[string]string{"GROUPS": "111", "SELF_MESSAGES": "false"}, []string{groupMsg, private, nullGroup}},
	} {
		p := parse(t, c.vars)
		in := NewIngest(p, &Policy{})
		chk := in.Check(p)
		for _, ev := range all {
			want := false
			for _, w := range c.pass {
				want = want || w == ev
			}
			if got := chk.Pass([]byte(ev), in.Event([]byte(ev))); got != want {
				t.Errorf("%v: %s: pass %v, want %v", c.vars, ev, got, want)
			}
		}
	}
	if NewIngest(&Policy{}, parse(t, map[string]string{"REPLAY_MAX_AGE": "1s"})) != nil {
		t.Error("an Ingest for policies that look into no event")
	}
}

func TestVarErrors(t *testing.T) {
	for _, c := range []struct{ suffix, value, want string }{
		{"GROUPS", "111,abc", `"abc" is not a group number`},
		{"GROUPS_DENY", "-5", `"-5" is not a group number`},
		{"USERS_DENY", "1 2", `"1 2" is not a QQ number`},
		{"SELF_MESSAGES", "no way", "not a boolean"},
		{"FILTER", `{"a":{".regex":"["}}`, "line 1, column 16"},
		{"FILTER", `{".nope":1}`, "unknown operator .nope"},
		{"FILTER_FILE", "/nonexistent/filter.json", "cannot read the filter"},
		{"REPLAY_MAX_AGE", "-1s", "not a duration"},
	} {
		row, _ := Lookup(c.suffix)
		err := row.Set(&Policy{}, c.value)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s=%s: %v, want %q", c.suffix, c.value, err, c.want)
		}
	}
	p := &Policy{}
	row, _ := Lookup("FILTER")
	row.Set(p, `{}`)
	row, _ = Lookup("FILTER_FILE")
	if err := row.Set(p, "/dev/null"); err == nil || !strings.Contains(err.Error(), "only one of") {
		t.Errorf("FILTER and FILTER_FILE both: %v", err)
	}
}

// The per-event cost: one extraction shared by ten bots, each a cheap check.
func BenchmarkIngestAndCheck(b *testing.B) {
	var ps []*Policy
	for i := range 10 {
		ps = append(ps, parse(b, map[string]string{"GROUPS": strconv.Itoa(100 + i)}))
	}
	in := NewIngest(ps...)
	var checks []*Check
	for _, p := range ps {
		checks = append(checks, in.Check(p))
	}
	ev := []byte(groupMsg)
	b.ReportAllocs()
	for b.Loop() {
		e := in.Event(ev)
		for _, c := range checks {
			c.Pass(ev, e)
		}
	}
}
