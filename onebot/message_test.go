package onebot

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// convertEvent is ConvertEvent with the spans found by MessageSpans.
func convertEvent(t testing.TB, b []byte, to MessageFormat) ([]byte, error) {
	t.Helper()
	msg, mf, err := MessageSpans(b)
	if err != nil {
		t.Fatal(err)
	}
	return ConvertEvent(b, msg, mf, to)
}

func decodeMap(t testing.TB, b []byte) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("%s: %v", b, err)
	}
	return m
}

// The text sample in string form is the string sample, and back; only
// message and message_format change, raw_message is kept byte for byte.
// MessageSpans finds the top-level message and message_format only (not a
// reply's inside data), leaves a missing one invalid, and refuses what is
// not an object.
func TestMessageSpans(t *testing.T) {
	b := []byte(`{"data":{"message":"no"},"message":[{"type":"text","data":{"text":"hi"}}],"message_format":"array"}`)
	msg, mf, err := MessageSpans(b)
	if err != nil || string(Raw(b, msg)) != `[{"type":"text","data":{"text":"hi"}}]` || string(Raw(b, mf)) != `"array"` {
		t.Errorf("got %q, %q, %v", Raw(b, msg), Raw(b, mf), err)
	}
	b = []byte(`{"message":"hi"}`)
	if msg, mf, err := MessageSpans(b); err != nil || string(Raw(b, msg)) != `"hi"` || mf.Valid() {
		t.Errorf("without message_format: %q, %v, %v", Raw(b, msg), mf, err)
	}
	if _, _, err := MessageSpans([]byte(`[1]`)); err == nil {
		t.Error("an array accepted")
	}
}

func TestConvertEventSamples(t *testing.T) {
	s := samples(t)
	arr, str := s["events_group_message_text.json"], s["events_group_message_string.json"]
	got, err := convertEvent(t, arr, FormatString)
	if err != nil || !reflect.DeepEqual(decodeMap(t, got), decodeMap(t, str)) {
		t.Fatalf("array sample as string: %s %v", got, err)
	}
	if !json.Valid(got) || !bytes.Contains(got, []byte(`"raw_message":"[CQ:at,qq=10001000] 帮我查下周六香山的天气，集合信息见群公告&#91;置顶&#93;，记得带水&amp;零食"`)) {
		t.Errorf("raw_message not kept as written: %s", got)
	}
	got, err = convertEvent(t, str, FormatArray)
	if err != nil || !reflect.DeepEqual(decodeMap(t, got), decodeMap(t, arr)) {
		t.Fatalf("string sample as array: %s %v", got, err)
	}
	for _, c := range []struct {
		ev []byte
		to MessageFormat
	}{{arr, FormatArray}, {str, FormatString}, {arr, FormatAsIs}, {s["events_notice_poke.json"], FormatString}} {
		if got, err := convertEvent(t, c.ev, c.to); got != nil || err != nil {
			t.Errorf("nothing to do, and yet %s %v", got, err)
		}
	}
}

func TestConvertEvent(t *testing.T) {
	for _, c := range []struct {
		in   string
		to   MessageFormat
		want string
	}{
		// go-cqhttp sends no message_format: one is added after the message.
		{`{"post_type":"message","message":[{"type":"at","data":{"qq":"1"}}],"raw_message":"[CQ:at,qq=1]"}`, FormatString,
			`{"post_type":"message","message":"[CQ:at,qq=1]","message_format":"string","raw_message":"[CQ:at,qq=1]"}`},
		{`{"message_format":"string","message":"a\"&amp;"}`, FormatArray,
			`{"message_format":"array","message":[{"type":"text","data":{"text":"a\"&"}}]}`},
		{`{"message":"\u005bCQ:face,id=1]"}`, FormatArray,
			`{"message":[{"type":"face","data":{"id":"1"}}],"message_format":"array"}`},
		{`{ "message" : [ ] , "x":1 }`, FormatString, `{ "message" : "","message_format":"string" , "x":1 }`},
	} {
		got, err := convertEvent(t, []byte(c.in), c.to)
		if err != nil || string(got) != c.want {
			t.Errorf("%s:\n got %s %v\nwant %s", c.in, got, err, c.want)
		}
	}
	if got, err := convertEvent(t, []byte(`{"message":[{"type":"a,b"}]}`), FormatString); got != nil || !errors.Is(err, ErrNotCQ) {
		t.Errorf("inexpressible: %s %v", got, err)
	}
}

func TestConvertResponse(t *testing.T) {
	const (
		getMsg = `{"status":"ok","retcode":0,"data":{"message_id":7,"message":[{"type":"text","data":{"text":"[x]"}}],` +
			`"raw_message":"&#91;x&#93;","message_format":"array"},"echo":"obmux:1"}`
		napcatForward = `{"status":"ok","data":{"messages":[{"message":"a[CQ:face,id=1]","message_format":"string"},` +
			`{"message":[{"type":"text","data":{"text":"b"}}],"message_format":"array"}]},"echo":1}`
		cqhttpForward = `{"status":"ok","data":{"messages":[{"content":"hi","sender":{"nickname":"x"}}]}}`
	)
	for _, c := range []struct {
		in, action string
		to         MessageFormat
		want       string
	}{
		{getMsg, ActionGetMsg, FormatString,
			`{"status":"ok","retcode":0,"data":{"message_id":7,"message":"&#91;x&#93;","raw_message":"&#91;x&#93;","message_format":"string"},"echo":"obmux:1"}`},
		{getMsg, ActionGetMsg, FormatArray, ""},
		{getMsg, ActionGetForwardMsg, FormatString, ""},
		{getMsg, "get_group_list", FormatString, ""},
		{napcatForward, ActionGetForwardMsg, FormatArray,
			`{"status":"ok","data":{"messages":[{"message":[{"type":"text","data":{"text":"a"}},{"type":"face","data":{"id":"1"}}],"message_format":"array"},` +
				`{"message":[{"type":"text","data":{"text":"b"}}],"message_format":"array"}]},"echo":1}`},
		{napcatForward, ActionGetForwardMsg, FormatString,
			`{"status":"ok","data":{"messages":[{"message":"a[CQ:face,id=1]","message_format":"string"},` +
				`{"message":"b","message_format":"string"}]},"echo":1}`},
		{cqhttpForward, ActionGetForwardMsg, FormatArray,
			`{"status":"ok","data":{"messages":[{"content":[{"type":"text","data":{"text":"hi"}}],"message_format":"array","sender":{"nickname":"x"}}]}}`},
		{`{"status":"failed","data":null}`, ActionGetMsg, FormatString, ""},
		{`{"status":"ok","data":{"messages":null}}`, ActionGetForwardMsg, FormatString, ""},
	} {
		b := []byte(c.in)
		f, err := Scan(b)
		if err != nil {
			t.Fatal(err)
		}
		got, err := ConvertResponse(b, f, c.action, c.to)
		if err != nil || string(got) != c.want {
			t.Errorf("%s %s %s:\n got %s %v\nwant %s", c.in, c.action, c.to, got, err, c.want)
		}
	}
}

func TestParseMessageFormat(t *testing.T) {
	for in, want := range map[string]MessageFormat{"": FormatAsIs, "array": FormatArray, "string": FormatString} {
		if got, err := ParseMessageFormat(in); got != want || err != nil {
			t.Errorf("%q: %q %v", in, got, err)
		}
	}
	for _, in := range []string{"Array", "cq", " string"} {
		if _, err := ParseMessageFormat(in); err == nil {
			t.Errorf("%q accepted", in)
		}
	}
}

func BenchmarkConvertEvent(b *testing.B) {
	for name, ev := range messageSamples(b) {
		ev = compact(b, ev)
		msg, mf, err := MessageSpans(ev)
		if err != nil {
			b.Fatal(err)
		}
		to := FormatString
		if FormatOf(ev, msg) == FormatString {
			to = FormatArray
		}
		b.Run(name+"/to_"+string(to), func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(ev)))
			for b.Loop() {
				if out, err := ConvertEvent(ev, msg, mf, to); out == nil || err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
