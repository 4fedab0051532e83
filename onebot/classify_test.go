package onebot

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"unicode/utf8"
)

// Literals, numbers, escapes, control characters and UTF-8 are checked
// everywhere in a frame, nested or not (issue 13, item 9).
func TestScanChecksLiteralsAndUTF8(t *testing.T) {
	for in, want := range map[string]error{
		`{"a":nulx}`:                 ErrMalformed,
		`{"a":nul}`:                  ErrMalformed,
		`{"a":tru}`:                  ErrMalformed,
		`{"a":truee}`:                ErrMalformed,
		`{"a":fals}`:                 ErrMalformed,
		`{"echo":nulx,"action":"x"}`: ErrMalformed,
		`{"a":[1,nulx]}`:             ErrMalformed,
		`{"a":{"b":tru}}`:            ErrMalformed,
		`{"a":01}`:                   ErrMalformed,
		`{"a":-}`:                    ErrMalformed,
		`{"a":1.}`:                   ErrMalformed,
		`{"a":1e}`:                   ErrMalformed,
		`{"a":.5}`:                   ErrMalformed,
		`{"a":+1}`:                   ErrMalformed,
		`{"a":0x10}`:                 ErrMalformed,
		`{"a":1-2}`:                  ErrMalformed,
		`{"a":"\x"}`:                 ErrMalformed,
		`{"a":"\u12"}`:               ErrMalformed,
		`{"a":"\u12g4"}`:             ErrMalformed,
		"{\"a\":\"tab\there\"}":      ErrMalformed,
		"{\"a\":\"nul\x00\"}":        ErrMalformed,
		"{\"a\":\"\xff\"}":           ErrInvalidUTF8,
		"{\"action\":\"send_msg\",\"echo\":\"\xc3\"}":     ErrInvalidUTF8,
		"{\"a\":\"0123456789abcdef\xed\xa0\x80\"}":        ErrInvalidUTF8, // a surrogate in UTF-8
		"{\"a\":\"\xc0\xaf\"}":                            ErrInvalidUTF8, // overlong
		"{\"a\":[\"ok\",{\"b\":\"ab\xf4\x90\x80\x80\"}]}": ErrInvalidUTF8, // beyond U+10FFFF
		"{\"k\xff\":1}": ErrInvalidUTF8,
	} {
		_, err := Scan([]byte(in))
		if !errors.Is(err, want) {
			t.Errorf("Scan(%q) = %v, want %v", in, err, want)
		}
	}
	for _, ok := range []string{
		`{"a":null,"b":true,"c":false,"d":[null,true,false]}`,
		`{"a":0,"b":-0,"c":-12.5e+3,"d":1E-7,"e":123456789012345678901234567890}`,
		`{"a":"\" \\ \/ \b \f \n \r \t \u00e9 \uD83D\uDE00"}`,
		`{"a":"中文 emoji 😀 and ASCII, longer than eight bytes"}`,
		`{"action":"send_msg","echo":{"seq":7}}`,
	} {
		if _, err := Scan([]byte(ok)); err != nil {
			t.Errorf("Scan(%s) = %v", ok, err)
		}
	}
}

// classifySeeds are the frames FuzzClassify starts from: every sample, and
// what issue 13 found or could be next (escaped and case-variant names,
// literals, UTF-8).
func classifySeeds(f *testing.F) {
	for _, b := range samples(f) {
		f.Add(b)
		var pretty bytes.Buffer // as /work/shared/samples has them: indented, a newline at the end
		if json.Indent(&pretty, b, "", "  ") == nil {
			f.Add(append(pretty.Bytes(), '\n'))
		}
	}
	for _, s := range []string{
		`{"action":"send_msg","params":{"message":"hi"},"ech\u006f":"obmux:2"}`,
		`{"action":"send_msg","echo":"a","ech\u006f":"b"}`,
		`{"\u0061ction":"send_msg","echo":1}`,
		`{"action":"get_status","ACTION":"set_group_kick"}`,
		`{"action":"x","ECHO":1}`,
		`{"post_type":"message","ſelf_id":1}`,
		`{"action":"x","echo\u0000":1}`,
		`{"status":"ok","retcode":0,"data":{"type":"stream"},"stream":"stream-action","echo":"obmux:P:1:0123456789abcdef"}`,
		`{"action":"x","echo":nulx}`,
		`{"action":"x","params":{"a":[tru,fals,nul]}}`,
		`{"action":"x","echo":01}`,
		`{"action":"x","echo":-1.5e+10}`,
		"{\"action\":\"x\",\"echo\":\"\xff\"}",
		"{\"action\":\"x\",\"params\":{\"m\":\"\xe4\xb8\"}}",
		"{\"action\":\"x\",\"echo\":\"a\tb\"}",
		`{"action":"x","echo":"\ud800"}`,
	} {
		f.Add([]byte(s))
	}
}

// FuzzClassify: the classifier agrees with JSON decoders about every frame
// it accepts, and accepts exactly the valid ones.
//
//   - Scan (so Classify) accepts a frame iff it is a JSON object that
//     json.Valid accepts and that is valid UTF-8, except that a duplicate
//     (in any spelling), a name that is one of obmux's in another case, or
//     nesting deeper than maxDepth is refused.
//   - For an accepted frame, every member obmux reads is what
//     encoding/json decodes under that name: exact names after unescaping
//     (as JSON.parse), and case-insensitive names (as encoding/json into a
//     struct, and Newtonsoft.Json).
//   - The kind follows from the members found.
func FuzzClassify(f *testing.F) {
	classifySeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		fr, kind, err := Classify(b)
		valid := json.Valid(b) && utf8.Valid(b) && bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{"))
		var scanErr error
		if _, scanErr = Scan(b); scanErr != nil {
			if valid && !errors.Is(scanErr, ErrDuplicateKey) && !errors.Is(scanErr, ErrAmbiguousKey) && !errors.Is(scanErr, ErrTooDeep) {
				t.Fatalf("valid JSON object refused: %v\n%q", scanErr, b)
			}
			if kind != KindInvalid || err == nil {
				t.Fatalf("Scan refused (%v) but Classify says %v, %v", scanErr, kind, err)
			}
			return
		}
		if !valid {
			t.Fatalf("Scan accepted what is not a valid JSON object: %q", b)
		}
		var exact map[string]json.RawMessage
		if err := json.Unmarshal(b, &exact); err != nil {
			t.Fatalf("encoding/json cannot decode an accepted frame: %v", err)
		}
		spans := map[string]Span{"post_type": fr.PostType, "meta_event_type": fr.MetaEventType, "self_id": fr.SelfID,
			"action": fr.Action, "echo": fr.Echo, "status": fr.Status, "data": fr.Data, "stream": fr.Stream,
			"retcode": fr.Retcode, "type": fr.Type}
		for name, s := range spans {
			if got, want := Raw(b, s), []byte(exact[name]); !bytes.Equal(got, want) {
				t.Fatalf("%q: obmux reads %q, a decoder %q\n%q", name, got, want, b)
			}
		}
		var folded struct {
			Echo   json.RawMessage `json:"echo"`
			Action json.RawMessage `json:"action"`
		}
		if err := json.Unmarshal(b, &folded); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(folded.Echo, Raw(b, fr.Echo)) || !bytes.Equal(folded.Action, Raw(b, fr.Action)) {
			t.Fatalf("a case-insensitive decoder reads echo %q action %q, obmux %q %q\n%q",
				folded.Echo, folded.Action, Raw(b, fr.Echo), Raw(b, fr.Action), b)
		}
		var want Kind
		switch {
		case fr.PostType.Valid() && Is(b, fr.PostType, "meta_event") && Is(b, fr.MetaEventType, "heartbeat"):
			want = KindHeartbeat
		case fr.PostType.Valid() && Is(b, fr.PostType, "meta_event") && Is(b, fr.MetaEventType, "lifecycle"):
			want = KindLifecycle
		case fr.PostType.Valid():
			want = KindEvent
		case fr.Action.Valid():
			want = KindAPIRequest
		case fr.Echo.Valid() || fr.Retcode.Valid() || fr.Status.Valid():
			want = KindAPIResponse
		default:
			want = KindInvalid
		}
		if kind != want {
			t.Fatalf("kind %v, want %v: %q", kind, want, b)
		}
	})
}
