package onebot

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestEncodeCQ(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`[]`, ``},
		{`[{"type":"text","data":{"text":"hi"}},{"type":"at","data":{"qq":"123"}}]`, `hi[CQ:at,qq=123]`},
		{`[{"type":"text","data":{"text":"a&b[c]d,e"}}]`, `a&amp;b&#91;c&#93;d,e`},
		{`[{"type":"image","data":{"file":"a,b[c]&d","url":"http://x/?a=1&b=2"}}]`,
			`[CQ:image,file=a&#44;b&#91;c&#93;&amp;d,url=http://x/?a=1&amp;b=2]`},
		{`[{"type":"shake","data":{}}]`, `[CQ:shake]`},
		{`[{"type":"shake"}]`, `[CQ:shake]`},
		{`[{"type":"shake","data":null}]`, `[CQ:shake]`},
		// Values become strings: numbers and booleans as written, objects
		// as compact JSON, null left out; the members' order is kept.
		{`[{"type":"image","data":{"sub_type":0,"z":true,"n":null,"f":1.50,"raw":{ "a" : [1, 2] }}}]`,
			`[CQ:image,sub_type=0,z=true,f=1.50,raw={"a":&#91;1&#44;2&#93;}]`},
		{`[{"data":{"id":"1"},"type":"reply"}]`, `[CQ:reply,id=1]`},
		{`[{"type":"text","data":{"text":""}},{"type":"face","data":{"id":"1"}}]`, `[CQ:face,id=1]`},
		{`[{"type":"text","data":{"text":7}}]`, `7`},
		{`[{"type":"text","data":{}}]`, ``},
		{`[{"type":"text","data":{"text":"\u005b\"\\\n"}}]`, "&#91;\"\\\n"},
		{`[{"type":"at","data":{"q\u0071":"1","e":""}}]`, `[CQ:at,qq=1]`},
		{` [ {"type" : "at" , "data" : {"qq" : "1"} } ] `, `[CQ:at,qq=1]`},
	} {
		got, err := EncodeCQ(nil, []byte(c.in), false)
		if err != nil || string(got) != c.want {
			t.Errorf("%s: %q %v, want %q", c.in, got, err, c.want)
		}
		q, err := EncodeCQ([]byte("x"), []byte(c.in), true)
		if want := "x" + string(appendJSONString(nil, []byte(c.want))); err != nil || string(q) != want {
			t.Errorf("%s quoted: %s %v, want %s", c.in, q, err, want)
		}
	}
}

func TestEncodeCQRefuses(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{`{"type":"text"}`, "not a JSON array"},
		{`"hi"`, "not a JSON array"},
		{`[1]`, "segment 0"},
		{`[{"type":"text","data":{"text":"a"}},{"data":{}}]`, `segment 1: no string "type"`},
		{`[{"type":1}]`, `no string "type"`},
		{`[{"type":"at","data":[1]}]`, `"data" is not an object`},
		{`[{"type":"at","type":"at"}]`, `two "type" members`},
		{`[{"type":"a,b"}]`, `type "a,b" cannot be written`},
		{`[{"type":""}]`, `type "" cannot be written`},
		{`[{"type":"at","data":{"q q":"1"}}]`, `key "q q" cannot be written`},
		{`[{"type":"at","data":{"q=":"1"}}]`, `key "q=" cannot be written`},
		{`[{"type":"at","data":{"qq":"1","q\u0071":"2"}}]`, `key "qq" twice`},
		{`[{"type":"at"}`, "not a JSON array"},
		{`[{"type":"at"}] x`, "not a JSON array"},
	} {
		got, err := EncodeCQ([]byte("keep"), []byte(c.in), true)
		if !errors.Is(err, ErrNotCQ) || !strings.Contains(err.Error(), c.want) || string(got) != "keep" {
			t.Errorf("%s: %q %v, want an error with %q and dst as it was", c.in, got, err, c.want)
		}
	}
}

func TestDecodeCQ(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{``, `[]`},
		{`hi`, `[{"type":"text","data":{"text":"hi"}}]`},
		{`hi[CQ:at,qq=123]`, `[{"type":"text","data":{"text":"hi"}},{"type":"at","data":{"qq":"123"}}]`},
		{`[CQ:shake]`, `[{"type":"shake","data":{}}]`},
		{`[CQ:image,file=a&#44;b&#91;c&#93;&amp;d,url=x?a=1&amp;b=2]z`,
			`[{"type":"image","data":{"file":"a,b[c]&d","url":"x?a=1&b=2"}},{"type":"text","data":{"text":"z"}}]`},
		{`a&amp;b&#91;c&#93;d&#44;e`, `[{"type":"text","data":{"text":"a&b[c]d,e"}}]`},
		// &amp; is undone last: &amp;#91; is the text &#91;.
		{`&amp;#91;&amp;amp;&x;&`, `[{"type":"text","data":{"text":"&#91;&amp;&x;&"}}]`},
		{`[CQ:at,qq=1,e=]`, `[{"type":"at","data":{"qq":"1","e":""}}]`},
		{`[CQ:a][CQ:b]`, `[{"type":"a","data":{}},{"type":"b","data":{}}]`},
		{"\"q\"\n\x01", `[{"type":"text","data":{"text":"\"q\"\n\u0001"}}]`},
		{`a[b]c[CQ`, `[{"type":"text","data":{"text":"a[b]c[CQ"}}]`},
		{`[CQ:face,id=1,raw={"a":1&#44;"b":2}]`, `[{"type":"face","data":{"id":"1","raw":"{\"a\":1,\"b\":2}"}}]`},
		// Does not parse as CQ code: one text segment of it all.
		{`hi [CQ:at,qq=1`, `[{"type":"text","data":{"text":"hi [CQ:at,qq=1"}}]`},
		{`[CQ:at,qq]&amp;`, `[{"type":"text","data":{"text":"[CQ:at,qq]&"}}]`},
		{`x[CQ:]`, `[{"type":"text","data":{"text":"x[CQ:]"}}]`},
		{`[CQ:at,]`, `[{"type":"text","data":{"text":"[CQ:at,]"}}]`},
		{`[CQ:at,=1]`, `[{"type":"text","data":{"text":"[CQ:at,=1]"}}]`},
		{`[CQ:a t]`, `[{"type":"text","data":{"text":"[CQ:a t]"}}]`},
		{`[CQ:at,qq=1,qq=2]`, `[{"type":"text","data":{"text":"[CQ:at,qq=1,qq=2]"}}]`},
		{`[CQ:at,qq=1][CQ:x`, `[{"type":"text","data":{"text":"[CQ:at,qq=1][CQ:x"}}]`},
	} {
		got := DecodeCQ([]byte("x"), []byte(c.in))
		if string(got) != "x"+c.want {
			t.Errorf("%q:\n got %s\nwant %s", c.in, got[1:], c.want)
		}
		if !json.Valid(got[1:]) {
			t.Errorf("%q: not JSON: %s", c.in, got[1:])
		}
	}
}

// messageSamples returns the message events of the shared samples (and the
// 616 KB image one when the shared samples are there).
func messageSamples(t testing.TB) map[string][]byte {
	out := map[string][]byte{}
	for name, b := range samples(t) {
		if bytes.Contains(b, []byte(`"raw_message"`)) {
			out[name] = b
		}
	}
	// The shared samples sit beside the main checkout (../../shared) or
	// beside the worktrees' directory (../../../shared).
	for _, dir := range []string{"../../shared", "../../../shared"} {
		if big, err := os.ReadFile(dir + "/samples/events/group_message_large_image_base64.json"); err == nil {
			out["large_image"] = compact(t, big)
			break
		}
	}
	return out
}

func compact(t testing.TB, b []byte) []byte {
	var c bytes.Buffer
	if err := json.Compact(&c, b); err != nil {
		t.Fatal(err)
	}
	return c.Bytes()
}

type sampleMsg struct {
	Message    json.RawMessage `json:"message"`
	Raw        string          `json:"raw_message"`
	Format     string          `json:"message_format"`
	Time, User int64
}

// Every sample's array message encodes to exactly its raw_message (NapCat's
// CQ form: null values left out, the face's raw object as JSON, the
// sticker's sub_type number as written), and decodes back to the same
// segments with every value a string.
func TestCQSamples(t *testing.T) {
	n := 0
	for name, b := range messageSamples(t) {
		var ev sampleMsg
		if err := json.Unmarshal(b, &ev); err != nil {
			t.Fatal(name, err)
		}
		if ev.Message[0] != '[' {
			continue
		}
		n++
		got, err := EncodeCQ(nil, ev.Message, false)
		if err != nil || string(got) != ev.Raw {
			t.Errorf("%s: encoded\n%.300s %v\nraw_message\n%.300s", name, got, err, ev.Raw)
		}
		back := DecodeCQ(nil, got)
		if want := normalize(t, ev.Message); !reflect.DeepEqual(normalize(t, back), want) {
			t.Errorf("%s: decoded\n%.300s\nwant\n%.300v", name, back, want)
		}
	}
	if n < 5 {
		t.Fatalf("only %d array samples", n)
	}
	// The string-format sample is the text sample's message in CQ form.
	s := samples(t)
	var arr, str sampleMsg
	json.Unmarshal(s["events_group_message_text.json"], &arr)
	json.Unmarshal(s["events_group_message_string.json"], &str)
	var cq string
	json.Unmarshal(str.Message, &cq)
	if got, _ := EncodeCQ(nil, arr.Message, false); string(got) != cq {
		t.Errorf("text sample encodes to %q, the string sample has %q", got, cq)
	}
	if got := DecodeCQ(nil, []byte(cq)); !reflect.DeepEqual(normalize(t, got), normalize(t, arr.Message)) {
		t.Errorf("string sample decodes to %s", got)
	}
}

type seg struct {
	Type string
	Data map[string]string
}

// normalize decodes a message array with encoding/json into what its CQ
// form keeps: every value a string (null and empty ones left out, objects
// compact JSON), texts joined and empty ones gone, a text's other data
// dropped.
func normalize(t testing.TB, msg []byte) []seg {
	t.Helper()
	var raw []map[string]json.RawMessage // exact names: not a struct's case-insensitive ones
	if err := json.Unmarshal(msg, &raw); err != nil {
		t.Fatalf("%s: %v", msg, err)
	}
	out := []seg{}
	for _, r := range raw {
		s := seg{Data: map[string]string{}}
		var data map[string]json.RawMessage
		if json.Unmarshal(r["type"], &s.Type) != nil || json.Unmarshal(r["data"], &data) != nil && r["data"] != nil {
			t.Fatalf("%s: not a segment", msg)
		}
		for k, v := range data {
			if string(v) == "null" || string(v) == `""` || s.Type == "text" && k != "text" {
				continue
			}
			var str string
			if json.Unmarshal(v, &str) != nil {
				str = string(compact(t, v))
			}
			s.Data[k] = str
		}
		if s.Type == "text" {
			if s.Data["text"] == "" {
				continue
			}
			if l := len(out) - 1; l >= 0 && out[l].Type == "text" {
				out[l].Data["text"] += s.Data["text"]
				continue
			}
		}
		out = append(out, s)
	}
	return out
}

// FuzzCQRoundTrip: array -> string -> array keeps every segment (values as
// strings, see normalize), and a second round changes nothing; the quoted
// form is the JSON string of the plain one.
func FuzzCQRoundTrip(f *testing.F) {
	for _, b := range messageSamples(f) {
		var ev sampleMsg
		json.Unmarshal(b, &ev)
		if ev.Message[0] == '[' && len(b) < 1<<16 {
			f.Add([]byte(ev.Message))
		}
	}
	f.Add([]byte(`[{"type":"text","data":{"text":"&amp;#91;[CQ:at,qq=1]"}},{"type":"x.y-z","data":{"a":"b,c]","n":1e3}}]`))
	f.Add([]byte(`[{"type":"text","data":{"text":"a"}},{"type":"text","data":{"text":"b","x":1}}]`))
	f.Fuzz(func(t *testing.T, in []byte) {
		if !json.Valid(in) || !utf8.Valid(in) {
			return
		}
		s1, err := EncodeCQ(nil, in, false)
		if err != nil {
			if !errors.Is(err, ErrNotCQ) {
				t.Fatalf("error not wrapping ErrNotCQ: %v", err)
			}
			return
		}
		q, err := EncodeCQ(nil, in, true)
		if err != nil || string(q) != string(appendJSONString(nil, s1)) {
			t.Fatalf("quoted %s %v, plain %q", q, err, s1)
		}
		a2 := DecodeCQ(nil, s1)
		if !json.Valid(a2) {
			t.Fatalf("%q decoded to invalid JSON %s", s1, a2)
		}
		if got, want := normalize(t, a2), normalize(t, in); !reflect.DeepEqual(got, want) {
			t.Fatalf("%s\n-> %q\n-> %s\ngot  %v\nwant %v", in, s1, a2, got, want)
		}
		s2, err := EncodeCQ(nil, a2, false)
		if err != nil || !bytes.Equal(s1, s2) {
			t.Fatalf("%s -> %q -> %s -> %q %v", in, s1, a2, s2, err)
		}
		if a3 := DecodeCQ(nil, s2); !bytes.Equal(a2, a3) {
			t.Fatalf("second round %s != %s", a3, a2)
		}
	})
}

func BenchmarkCQ(b *testing.B) {
	for name, ev := range messageSamples(b) {
		var m sampleMsg
		json.Unmarshal(ev, &m)
		if m.Message[0] != '[' {
			continue
		}
		name = strings.TrimSuffix(strings.TrimPrefix(name, "events_"), ".json")
		cq, _ := EncodeCQ(nil, m.Message, false)
		b.Run("encode/"+name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(m.Message)))
			buf := make([]byte, 0, 2*len(m.Message))
			for b.Loop() {
				if _, err := EncodeCQ(buf[:0], m.Message, true); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("decode/"+name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(cq)))
			buf := make([]byte, 0, 4*len(cq))
			for b.Loop() {
				DecodeCQ(buf[:0], cq)
			}
		})
	}
}

// FuzzDecodeCQ: any string decodes to a JSON array that encodes back to a
// string decoding to the same array, but for empty values (string -> array
// -> string -> array), and a second round changes nothing.
func FuzzDecodeCQ(f *testing.F) {
	for _, b := range messageSamples(f) {
		var ev sampleMsg
		json.Unmarshal(b, &ev)
		if len(ev.Raw) < 1<<16 {
			f.Add([]byte(ev.Raw))
		}
	}
	f.Add([]byte("[CQ:at,qq=1,qq=2]&amp;#91;[CQ:a t]"))
	f.Fuzz(func(t *testing.T, s []byte) {
		if !utf8.Valid(s) {
			return
		}
		a1 := DecodeCQ(nil, s)
		if !json.Valid(a1) {
			t.Fatalf("%q decoded to invalid JSON %s", s, a1)
		}
		s1, err := EncodeCQ(nil, a1, false)
		if err != nil {
			t.Fatalf("%q -> %s does not encode: %v", s, a1, err)
		}
		a2 := DecodeCQ(nil, s1)
		if !reflect.DeepEqual(normalize(t, a1), normalize(t, a2)) {
			t.Fatalf("%q -> %s -> %q -> %s", s, a1, s1, a2)
		}
		if s2, err := EncodeCQ(nil, a2, false); err != nil || !bytes.Equal(s1, s2) || !bytes.Equal(DecodeCQ(nil, s2), a2) {
			t.Fatalf("second round: %q -> %s -> %q %v", s1, a2, s2, err)
		}
	})
}
