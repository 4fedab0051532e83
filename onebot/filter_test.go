package onebot

import (
	"errors"
	"testing"
)

const filterEvent = `{"time":1,"self_id":10001,"post_type":"message","message_type":"group","group_id":111,"user_id":20002,` +
	`"anonymous":null,"raw_message":"!!ping [CQ:face,id=1]","font":14.50,"sender":{"role":"admin","nickname":"A\u0042c","card":""},` +
	`"message":[{"type":"text","data":{"text":"!!ping "}},{"type":"face","data":{"id":"1"}}],"a.b":"dot"}`

// Every operator, with go-cqhttp's semantics (values compare as gjson's
// String gives them).
func TestFilterOperators(t *testing.T) {
	for _, c := range []struct {
		filter string
		want   bool
	}{
		{`{}`, true},
		{`{".not":{}}`, false},
		// plain key: .eq
		{`{"message_type":"group"}`, true},
		{`{"message_type":"private"}`, false},
		{`{"group_id":111}`, true},
		{`{"group_id":"111"}`, true}, // values compare as strings
		{`{"group_id":111.0}`, true}, // 111.0 is "111"
		{`{"font":14.5}`, true},      // 14.50 is "14.5"
		{`{"anonymous":null}`, true}, // null is ""
		{`{"missing":""}`, true},     // missing is "" too
		{`{"anonymous":{".eq":null}}`, true},
		{`{"sender":{"role":"admin"}}`, true},
		{`{"sender.role":"admin"}`, true},
		{`{"sender.nickname":"ABc"}`, true}, // escapes in the event are undone
		{`{"sender.role":"member"}`, false},
		{`{"message.0.type":"text"}`, true},
		{`{"message.1.data.id":1}`, true},
		{`{"message.2.type":""}`, true},
		{`{"a\\.b":"dot"}`, true},
		{`{"user_id.x":""}`, true}, // below a scalar: missing
		{`{"sender":{".eq":"x"}}`, false},
		{`{"message.1.data":{"id":"1"}}`, true},
		{`{"message.1.data":"{\"id\":\"1\"}"}`, true}, // an object is its raw JSON
		{`{"post_type":true}`, false},
		// .neq
		{`{"user_id":{".neq":12345}}`, true},
		{`{"user_id":{".neq":20002}}`, false},
		// .in: array membership, string substring
		{`{"group_id":{".in":[11111,111]}}`, true},
		{`{"group_id":{".in":[11111,222]}}`, false},
		{`{"group_id":{".in":[]}}`, false},
		{`{"message_type":{".in":"group|discuss"}}`, true},
		{`{"message_type":{".in":"private"}}`, false},
		{`{"missing":{".in":"abc"}}`, true}, // "" is in every string
		// .contains
		{`{"raw_message":{".contains":"ping"}}`, true},
		{`{"raw_message":{".contains":"pong"}}`, false},
		{`{"group_id":{".contains":11}}`, true},
		// .regex
		{`{"raw_message":{".regex":"^!!"}}`, true},
		{`{"raw_message":{".regex":"^ping"}}`, false},
		{`{"message_type":{".regex":"group|discuss"}}`, true},
		// .and .or .not
		{`{".and":{"message_type":"group","group_id":111}}`, true},
		{`{".and":{"message_type":"group","group_id":222}}`, false},
		{`{".or":[{"message_type":"private"},{"group_id":111}]}`, true},
		{`{".or":[{"message_type":"private"},{"group_id":222}]}`, false},
		{`{".or":[]}`, false},
		{`{".not":{"group_id":111}}`, false},
		{`{"user_id":{".not":{".in":[1,2]},".neq":3}}`, true},
		{`{".or":[{"message_type":"private","user_id":{".not":{".in":[1]}}},{"message_type":{".regex":"group|discuss"},".or":[{"group_id":12345},{"raw_message":{".contains":"CQ:face"}}]}]}`, true},
		{`{"message_type":"group","anonymous":{".eq":null}}`, true},
	} {
		f, err := ParseFilter([]byte(c.filter))
		if err != nil {
			t.Errorf("%s: %v", c.filter, err)
			continue
		}
		x := NewExtractor()
		m := f.Bind(x)
		if got := m.Match([]byte(filterEvent), x.Extract([]byte(filterEvent), nil)); got != c.want {
			t.Errorf("%s: %v, want %v", c.filter, got, c.want)
		}
	}
}

// What go-cqhttp refuses (it panics and runs with no filter) is an error
// with its position.
func TestFilterErrors(t *testing.T) {
	for _, c := range []struct {
		filter    string
		line, col int
	}{
		{`[]`, 1, 1},
		{`{"a":1,}`, 1, 8},
		{"{\n  \"raw_message\": {\".regex\": \"(\"}}", 2, 29},
		{`{".foo":1}`, 1, 2},
		{`{".not":1}`, 1, 9},
		{`{".and":[]}`, 1, 9},
		{`{".or":{}}`, 1, 8},
		{`{".or":[1]}`, 1, 9},
		{`{"a":{".in":{}}}`, 1, 13},
		{`{"a":{".contains":[]}}`, 1, 19},
		{`{"a":{".regex":{}}}`, 1, 16},
		{`{"":1}`, 1, 2},
		{`{"message.#":2}`, 1, 2},
		{`{"a*":2}`, 1, 2},
		{`{"@this":2}`, 1, 2},
	} {
		_, err := ParseFilter([]byte(c.filter))
		var fe *FilterError
		if !errors.As(err, &fe) {
			t.Errorf("%q: %v, want a FilterError", c.filter, err)
			continue
		}
		if fe.Line != c.line || fe.Col != c.col {
			t.Errorf("%q: at %d:%d (%v), want %d:%d", c.filter, fe.Line, fe.Col, fe, c.line, c.col)
		}
	}
}

// FuzzParseFilter: no panic; a filter that parses matches any event without
// panicking.
func FuzzParseFilter(f *testing.F) {
	for _, s := range []string{`{}`, `{".not":{}}`, `{"a.b":{".in":[1,"x",null]}}`, `{".or":[{"a":1},{"b":{".regex":"^x"}}]}`,
		`{"message.0.type":"text","sender":{".neq":{"a":1}}}`} {
		f.Add([]byte(s))
	}
	ev := []byte(filterEvent)
	f.Fuzz(func(t *testing.T, src []byte) {
		fl, err := ParseFilter(src)
		if err != nil {
			var fe *FilterError
			if !errors.As(err, &fe) || fe.Offset < 0 || fe.Offset > len(src) {
				t.Fatalf("error %v", err)
			}
			return
		}
		x := NewExtractor()
		m := fl.Bind(x)
		m.Match(ev, x.Extract(ev, nil))
	})
}

func BenchmarkFilter(b *testing.B) {
	ev := []byte(filterEvent)
	for name, src := range map[string]string{
		"group_in":    `{"group_id":{".in":[1,2,3,111]}}`,
		"nested_path": `{"sender.role":"admin","message.0.type":"text"}`,
		"regex":       `{"raw_message":{".regex":"^!!"}}`,
	} {
		f, err := ParseFilter([]byte(src))
		if err != nil {
			b.Fatal(err)
		}
		x := NewExtractor()
		m := f.Bind(x)
		vals := x.Extract(ev, nil)
		b.Run("extract/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				vals = x.Extract(ev, vals)
			}
		})
		b.Run("match/"+name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if !m.Match(ev, vals) {
					b.Fatal("no match")
				}
			}
		})
	}
}
