package policy

import (
	"bytes"
	"encoding/json"
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
		{"MESSAGE_FORMAT", "Array", "not a message format"},
		{"MESSAGE_FORMAT", "cq", "not a message format"},
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
	in, checks := ingestChecks(ps)
	ev := []byte(groupMsg)
	b.ReportAllocs()
	for b.Loop() {
		e := in.Event(ev)
		for _, c := range checks {
			c.Pass(ev, e)
		}
	}
}

const (
	arrayMsg  = `{"self_id":10001,"post_type":"message","message_type":"group","group_id":111,"user_id":20002,"message":[{"type":"at","data":{"qq":"10001"}},{"type":"text","data":{"text":" a&b"}}],"raw_message":"[CQ:at,qq=10001] a&amp;b","message_format":"array"}`
	stringMsg = `{"self_id":10001,"post_type":"message","message_type":"group","group_id":111,"user_id":20002,"message":"[CQ:at,qq=10001] a&amp;b","raw_message":"[CQ:at,qq=10001] a&amp;b","message_format":"string"}`
	sentMsg   = `{"self_id":10001,"post_type":"message_sent","message_type":"group","group_id":111,"user_id":10001,"message":[{"type":"face","data":{"id":"1"}}],"raw_message":"[CQ:face,id=1]"}`
	badMsg    = `{"self_id":10001,"post_type":"message","message":[{"type":"a b"}],"raw_message":"?"}`
	noticeMsg = `{"self_id":10001,"post_type":"notice","notice_type":"essence","message":[{"type":"text","data":{"text":"x"}}]}`
)

// MESSAGE_FORMAT: each bot gets the event in its format; the other form is
// made once, at ingest, and shared by every bot that wants it.
func TestMessageFormat(t *testing.T) {
	asIs, arr := &Policy{}, parse(t, map[string]string{"MESSAGE_FORMAT": "array"})
	str1 := parse(t, map[string]string{"MESSAGE_FORMAT": "string"})
	str2 := parse(t, map[string]string{"MESSAGE_FORMAT": "string", "GROUPS": "111"})
	in := NewIngest(asIs, arr, str1, str2)
	if in == nil {
		t.Fatal("no Ingest for policies with a message format")
	}
	checks := map[*Policy]*Check{arr: in.Check(arr), str1: in.Check(str1), str2: in.Check(str2), asIs: in.Check(asIs)}
	if checks[asIs] != nil {
		t.Error("a Check for a policy that neither filters nor converts")
	}
	for _, c := range []struct {
		ev                string
		asArray, asString string
	}{
		{arrayMsg, arrayMsg, stringMsg},
		{stringMsg, arrayMsg, stringMsg},
		{sentMsg, sentMsg, strings.Replace(sentMsg, `[{"type":"face","data":{"id":"1"}}]`, `"[CQ:face,id=1]","message_format":"string"`, 1)},
		{noticeMsg, noticeMsg, noticeMsg}, // only message events have their message converted
	} {
		ev := []byte(c.ev)
		e := in.Event(ev)
		for p, want := range map[*Policy]string{arr: c.asArray, str1: c.asString, str2: c.asString, asIs: c.ev} {
			got, ok := checks[p].Frame(ev, e)
			if !ok || !sameJSON(t, got, []byte(want)) {
				t.Errorf("%s for %q: %s %v, want %s", c.ev, p.MessageFormat, got, ok, want)
			}
			if !bytes.Contains(got, []byte(`"raw_message":"`)) && bytes.Contains(ev, []byte(`"raw_message"`)) {
				t.Errorf("raw_message lost: %s", got)
			}
		}
		s1, _ := checks[str1].Frame(ev, e)
		s2, _ := checks[str2].Frame(ev, e)
		a, _ := checks[arr].Frame(ev, e)
		if &s1[0] != &s2[0] {
			t.Errorf("%s: the two string bots got two copies", c.ev)
		}
		if (&a[0] == &ev[0]) == (&s1[0] == &ev[0]) && c.ev != noticeMsg {
			t.Errorf("%s: one of the array and string bots should get the event itself", c.ev)
		}
		if e.Bytes() == 0 && c.ev != noticeMsg || e.Bytes() != 0 && c.ev == noticeMsg {
			t.Errorf("%s: Bytes %d", c.ev, e.Bytes())
		}
	}
	// A message CQ code cannot express: the string bots get it as it is,
	// and are told.
	ev := []byte(badMsg)
	e := in.Event(ev)
	if got, ok := checks[str1].Frame(ev, e); ok || string(got) != badMsg || e.Err() == nil {
		t.Errorf("inexpressible: %s %v %v", got, ok, e.Err())
	}
	if got, ok := checks[arr].Frame(ev, e); !ok || string(got) != badMsg {
		t.Errorf("inexpressible, array bot: %s %v", got, ok)
	}
	// Nothing is made when no bot wants the other form.
	in = NewIngest(arr)
	if e := in.Event([]byte(arrayMsg)); e.Bytes() != 0 {
		t.Error("a string form made that no bot wants")
	}
}

func sameJSON(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatalf("%s: %v", a, err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return bytes.Equal(xb, yb)
}

// The per-event cost with formats: one extraction and one conversion shared
// by ten bots, five wanting arrays (the upstream's form) and five strings.
func BenchmarkIngestFormats(b *testing.B) {
	var ps []*Policy
	for i := range 10 {
		f := "array"
		if i%2 == 1 {
			f = "string"
		}
		ps = append(ps, parse(b, map[string]string{"GROUPS": strconv.Itoa(111 + i%2), "MESSAGE_FORMAT": f}))
	}
	in, checks := ingestChecks(ps)
	ev := []byte(arrayMsg)
	b.ReportAllocs()
	for b.Loop() {
		e := in.Event(ev)
		for _, c := range checks {
			if c.Pass(ev, e) {
				c.Frame(ev, e)
			}
		}
	}
}

// ingestChecks returns the Ingest of ps and the Check of each, in order.
func ingestChecks(ps []*Policy) (*Ingest, []*Check) {
	in := NewIngest(ps...)
	checks := make([]*Check, len(ps))
	for i, p := range ps {
		checks[i] = in.Check(p)
	}
	return in, checks
}
