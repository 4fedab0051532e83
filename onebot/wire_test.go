package onebot

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

func samples(t testing.TB) map[string][]byte {
	t.Helper()
	files, err := filepath.Glob("testdata/samples/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("no samples: %v", err)
	}
	out := map[string][]byte{}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(f)] = bytes.TrimSpace(b)
	}
	return out
}

func TestClassifySamples(t *testing.T) {
	want := map[string]Kind{
		"events_meta_heartbeat.json":                  KindHeartbeat,
		"events_meta_lifecycle_connect.json":          KindLifecycle,
		"api_request_no_echo.json":                    KindAPIRequest,
		"api_request_send_group_msg.json":             KindAPIRequest,
		"api_response_ok.json":                        KindAPIResponse,
		"api_response_stream_2.json":                  KindAPIResponse,
		"events_group_message_mixed.json":             KindEvent,
		"events_notice_poke.json":                     KindEvent,
		"api_response_failed_1404.json":               KindAPIResponse,
		"events_group_message_text.json":              KindEvent,
		"api_request_get_login_info_object_echo.json": KindAPIRequest,
	}
	s := samples(t)
	for name, kind := range want {
		_, got, err := Classify(s[name])
		if err != nil || got != kind {
			t.Errorf("%s: %v %v, want %v", name, got, err, kind)
		}
	}
	f, _, _ := Classify(s["events_group_message_text.json"])
	if id, ok := Int(s["events_group_message_text.json"], f.SelfID); !ok || id <= 0 {
		t.Errorf("self_id not read: %v %v", id, ok)
	}
}

func TestScanRejects(t *testing.T) {
	for in, want := range map[string]error{
		``:                                      ErrNotObject,
		`[1]`:                                   ErrNotObject,
		`{"a":1`:                                ErrMalformed,
		`{"a":1}x`:                              ErrMalformed,
		`{"a" 1}`:                               ErrMalformed,
		`{"a":"x}`:                              ErrMalformed,
		`{"a":[1,}`:                             ErrMalformed,
		`{"echo":1,"echo":2}`:                   ErrDuplicateKey,
		`{"action":"a","echo":1,"ech\u006f":2}`: ErrDuplicateKey,
		`{"\u0061ction":"a","action":"b"}`:      ErrDuplicateKey,
		`{"action":"a","ECHO":1}`:               ErrAmbiguousKey,
		`{"action":"a","Echo":1}`:               ErrAmbiguousKey,
		`{"Action":"a"}`:                        ErrAmbiguousKey,
		`{"post_type":"message","ſelf_id":1}`:   ErrAmbiguousKey, // U+017F folds to s
		`{"action":"a","E\u0043ho":1}`:          ErrAmbiguousKey,
		`{"action":"a","\x":1}`:                 ErrMalformed,
		`{"a":` + strings.Repeat("[", 600) + strings.Repeat("]", 600) + `}`: ErrTooDeep,
	} {
		if _, err := Scan([]byte(in)); !errors.Is(err, want) {
			t.Errorf("Scan(%.40q) = %v, want %v", in, err, want)
		}
	}
	// A member named with escapes is that member.
	in := []byte(`{"action":"send_msg","ech\u006f":"e","\u0065cho_x":1,"Echo\u0000":2}`)
	f, err := Scan(in)
	if err != nil || string(Raw(in, f.Echo)) != `"e"` || !Is(in, f.Action, "send_msg") {
		t.Fatalf("escaped echo: %v %q", err, Raw(in, f.Echo))
	}
	if got := string(SetEcho(in, f, []byte(`"obmux:1"`))); got != `{"action":"send_msg","ech\u006f":"obmux:1","\u0065cho_x":1,"Echo\u0000":2}` {
		t.Errorf("SetEcho: %s", got)
	}
	// Escaped quotes and backslashes inside strings.
	f, err = Scan([]byte(`{"a":"x\\\"}","echo":"e\\"}`))
	if err != nil || !f.Echo.Valid() {
		t.Fatalf("escapes: %v", err)
	}
}

func TestSetEcho(t *testing.T) {
	for _, c := range []struct{ in, echo, want string }{
		{`{"action":"a","echo":"17"}`, `"obmux:1"`, `{"action":"a","echo":"obmux:1"}`},
		{`{"action":"a"}`, `"obmux:1"`, `{"echo":"obmux:1","action":"a"}`},
		{`{}`, `1`, `{"echo":1}`},
		{`{"echo":"x","retcode":0}`, ``, `{"retcode":0}`},
		{`{"retcode":0, "echo":"x"}`, ``, `{"retcode":0}`},
		{`{"echo":"x"}`, ``, `{}`},
		{`{"echo":"obmux:2","data":null}`, `12345678901234567890123`, `{"echo":12345678901234567890123,"data":null}`},
	} {
		f, err := Scan([]byte(c.in))
		if err != nil {
			t.Fatal(err)
		}
		var echo []byte
		if c.echo != "" {
			echo = []byte(c.echo)
		}
		if got := string(SetEcho([]byte(c.in), f, echo)); got != c.want {
			t.Errorf("SetEcho(%s, %s) = %s, want %s", c.in, c.echo, got, c.want)
		}
	}
}

// FuzzScan: no panic; every valid JSON object is scanned (or refused for a
// duplicate or depth), and the spans found are valid JSON values.
func FuzzScan(f *testing.F) {
	for _, b := range samples(f) {
		f.Add(b)
	}
	f.Add([]byte(`{"echo":1,"echo":2}`))
	f.Add([]byte("{\"a\":\"\xff\"}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := Scan(b)
		if err != nil {
			if json.Valid(b) && utf8.Valid(b) && bytes.HasPrefix(bytes.TrimSpace(b), []byte("{")) &&
				!errors.Is(err, ErrDuplicateKey) && !errors.Is(err, ErrAmbiguousKey) && !errors.Is(err, ErrTooDeep) {
				t.Fatalf("valid JSON object refused: %v", err)
			}
			return
		}
		if !json.Valid(b) || !utf8.Valid(b) {
			t.Fatalf("invalid JSON accepted: %q", b)
		}
		for _, s := range []Span{fr.Echo, fr.PostType, fr.Action, fr.Data, fr.SelfID} {
			if s.Valid() && !json.Valid(b[s.Start:s.End]) {
				t.Fatalf("span %v is not a JSON value: %q", s, b[s.Start:s.End])
			}
		}
	})
}

// FuzzEchoRoundTrip: a request's echo replaced by obmux's and put back comes
// back byte-identical, and the frame stays valid JSON.
func FuzzEchoRoundTrip(f *testing.F) {
	for _, b := range samples(f) {
		f.Add(b)
	}
	f.Add([]byte(`{"action":"x","echo":123456789012345678901234567890}`))
	f.Add([]byte(`{"action":"x","echo":{"seq":7,"nested":[1,{"a":"\"}"}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, err := Scan(b)
		if err != nil {
			return
		}
		orig := Raw(b, fr.Echo)
		ours := []byte(`"obmux:42"`)
		sent := SetEcho(b, fr, ours)
		fs, err := Scan(sent)
		if err != nil {
			t.Fatalf("rewritten frame does not scan: %v\n%q", err, sent)
		}
		if !bytes.Equal(Raw(sent, fs.Echo), ours) {
			t.Fatalf("our echo not found in %q", sent)
		}
		back := SetEcho(sent, fs, orig)
		fb, err := Scan(back)
		if err != nil {
			t.Fatalf("restored frame does not scan: %v", err)
		}
		if !bytes.Equal(Raw(back, fb.Echo), orig) {
			t.Fatalf("echo %q came back as %q", orig, Raw(back, fb.Echo))
		}
		if json.Valid(b) && !json.Valid(back) {
			t.Fatalf("valid frame became invalid: %q -> %q", b, back)
		}
	})
}

func BenchmarkClassify(b *testing.B) {
	s := samples(b)
	cases := map[string][]byte{"group_message_text": s["events_group_message_text.json"], "group_message_mixed": s["events_group_message_mixed.json"],
		// Chinese text as Python's json.dumps writes it (ensure_ascii): every character an escape.
		"escaped_text_96KB": []byte(`{"post_type":"message","raw_message":"` + strings.Repeat(`\u4e2d\u6587`, 8000) + `"}`)}
	for _, name := range []string{"group_message_text", "group_message_mixed"} { // as NapCat sends them: no indentation
		var buf bytes.Buffer
		if err := json.Compact(&buf, cases[name]); err != nil {
			b.Fatal(err)
		}
		cases[name+"_compact"] = buf.Bytes()
	}
	if big, err := os.ReadFile("../../shared/samples/events/group_message_large_image_base64.json"); err == nil {
		var v any
		json.Unmarshal(big, &v)
		cases["large_image_616KB"], _ = json.Marshal(v)
	}
	for name, frame := range cases {
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(frame)))
			for b.Loop() {
				if _, k, err := Classify(frame); err != nil || k != KindEvent {
					b.Fatal(k, err)
				}
			}
		})
	}
}

func BenchmarkEchoRewrite(b *testing.B) {
	req := samples(b)["api_request_send_group_msg.json"]
	b.ReportAllocs()
	for b.Loop() {
		f, _ := Scan(req)
		out := SetEcho(req, f, []byte(`"obmux:123456"`))
		f2, _ := Scan(out)
		SetEcho(out, f2, Raw(req, f.Echo))
	}
}
