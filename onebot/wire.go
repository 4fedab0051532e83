package onebot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Span is a half-open byte range [Start, End) inside a frame.
type Span struct{ Start, End int }

// Valid reports whether the span was found.
func (s Span) Valid() bool { return s.End > s.Start }

// Frame is what Scan learned about one OneBot frame: the raw values of the
// top-level members obmux cares about, as spans into the frame. A missing
// member has an invalid span.
type Frame struct {
	PostType      Span // raw JSON value of "post_type"
	MetaEventType Span // raw JSON value of "meta_event_type"
	SelfID        Span // raw JSON value of "self_id"
	Action        Span // raw JSON value of "action"
	Echo          Span // raw JSON value of "echo"
	EchoMember    Span // the whole `"echo":value` member, for removal
	Status        Span // raw JSON value of "status"
	Data          Span // raw JSON value of "data"
	Stream        Span // raw JSON value of "stream"
	Retcode       Span // raw JSON value of "retcode"
	Type          Span // raw JSON value of "type" (inside a response's data)
}

// Errors returned by Scan.
var (
	ErrNotObject     = errors.New("not a JSON object")
	ErrMalformed     = errors.New("malformed JSON")
	ErrDuplicateKey  = errors.New("duplicate member")
	ErrAmbiguousKey  = errors.New("member name differs from a OneBot member's only in case")
	ErrTooDeep       = errors.New("nested too deeply")
	errUnexpectedEnd = fmt.Errorf("%w: unexpected end", ErrMalformed)
)

// maxDepth bounds nesting so that a hostile frame cannot make skipping it
// expensive in memory; no OneBot frame comes near it.
const maxDepth = 512

// Scan reads the top level of a JSON object frame and records where the
// members obmux uses are. Nested values are skipped, not decoded: strings are
// skipped with a vectorised search for the closing quote, so a 600 KB image
// event costs little more than a memchr. Scan checks the structure of the
// whole frame (brackets, strings, commas, colons) but not the spelling of
// numbers and literals inside nested values.
//
// Member names are compared as a JSON decoder sees them, after unescaping:
// "ech\u006f" is "echo". A member obmux uses that occurs twice, in whatever
// spelling, is an error (ErrDuplicateKey), and so is a name that differs
// from one of them in case only (ErrAmbiguousKey): decoders that match names
// regardless of case (Go's encoding/json, Newtonsoft.Json) would take it for
// that member. Either way obmux and the peer cannot disagree about a frame's
// echo or action.
func Scan(b []byte) (Frame, error) {
	var f Frame
	err := Members(b, func(key []byte, member, val Span) error {
		dst, err := f.member(key)
		if dst == nil || err != nil {
			return err
		}
		if dst.Valid() {
			return fmt.Errorf("%w %q", ErrDuplicateKey, key)
		}
		*dst = val
		if dst == &f.Echo {
			f.EchoMember = member
		}
		return nil
	})
	return f, err
}

// Members calls fn for every member of the JSON object b, in order, with the
// member's name as written (still escaped), the span of the whole member and the
// span of its value. An error from fn stops it and is returned.
func Members(b []byte, fn func(key []byte, member, val Span) error) error {
	i := skipWS(b, 0)
	if i >= len(b) || b[i] != '{' {
		return ErrNotObject
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == '}' {
		return checkTrailing(b, i+1)
	}
	for {
		if i >= len(b) || b[i] != '"' {
			return fmt.Errorf("%w: expected member name at offset %d", ErrMalformed, i)
		}
		keyStart := i
		end, err := skipString(b, i)
		if err != nil {
			return err
		}
		i = skipWS(b, end)
		if i >= len(b) || b[i] != ':' {
			return fmt.Errorf("%w: expected ':' at offset %d", ErrMalformed, i)
		}
		i = skipWS(b, i+1)
		valStart := i
		if i, err = skipValue(b, i, 0); err != nil {
			return err
		}
		if err := fn(b[keyStart+1:end-1], Span{keyStart, i}, Span{valStart, i}); err != nil {
			return err
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return errUnexpectedEnd
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case '}':
			return checkTrailing(b, i+1)
		default:
			return fmt.Errorf("%w: expected ',' or '}' at offset %d", ErrMalformed, i)
		}
	}
}

// member returns where the member named raw (as written, still escaped)
// goes, nil for a member obmux does not use, or an error for a name obmux
// and a peer could read differently.
func (f *Frame) member(raw []byte) (*Span, error) {
	if dst := f.named(raw); dst != nil {
		return dst, nil
	}
	if plainName(raw) {
		return nil, nil // the name as written is the name: it is none of ours
	}
	key := raw
	if bytes.IndexByte(raw, '\\') >= 0 {
		var s string
		if err := json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &s); err != nil {
			return nil, fmt.Errorf("%w: member name %q: %w", ErrMalformed, raw, err)
		}
		key = []byte(s)
		if dst := f.named(key); dst != nil {
			return dst, nil
		}
	}
	for _, name := range memberNames {
		if bytes.EqualFold(key, []byte(name)) {
			return nil, fmt.Errorf("%w: %q (obmux reads %q)", ErrAmbiguousKey, key, name)
		}
	}
	return nil, nil
}

// memberNames are the names Frame.named knows.
var memberNames = [...]string{"post_type", "meta_event_type", "self_id", "action", "echo", "status", "data", "stream", "retcode", "type"}

// plainName reports whether raw holds only a-z, 0-9 and '_': then it is
// spelt as it reads, and equals no name of memberNames in another case.
func plainName(raw []byte) bool {
	for _, c := range raw {
		if (c < 'a' || c > 'z') && (c < '0' || c > '9') && c != '_' {
			return false
		}
	}
	return true
}

// named returns the span of the member named key (unescaped), or nil.
func (f *Frame) named(key []byte) *Span {
	switch string(key) {
	case "post_type":
		return &f.PostType
	case "meta_event_type":
		return &f.MetaEventType
	case "self_id":
		return &f.SelfID
	case "action":
		return &f.Action
	case "echo":
		return &f.Echo
	case "status":
		return &f.Status
	case "data":
		return &f.Data
	case "stream":
		return &f.Stream
	case "retcode":
		return &f.Retcode
	case "type":
		return &f.Type
	}
	return nil
}

func checkTrailing(b []byte, i int) error {
	if i = skipWS(b, i); i != len(b) {
		return fmt.Errorf("%w: data after the object at offset %d", ErrMalformed, i)
	}
	return nil
}

func skipWS(b []byte, i int) int {
	for i < len(b) {
		switch b[i] {
		case ' ', '\t', '\n', '\r':
			i++
		default:
			return i
		}
	}
	return i
}

// skipString returns the offset just past the string starting at b[i] == '"'.
func skipString(b []byte, i int) (int, error) {
	i++
	for {
		j := bytes.IndexByte(b[i:], '"')
		if j < 0 {
			return 0, fmt.Errorf("%w: unterminated string", ErrMalformed)
		}
		q := i + j
		// Count the backslashes right before the quote: an odd number escapes it.
		n := 0
		for k := q - 1; k >= i && b[k] == '\\'; k-- {
			n++
		}
		if n%2 == 0 {
			if bytes.IndexByte(b[i:q], '\n') >= 0 {
				return 0, fmt.Errorf("%w: raw newline in string", ErrMalformed)
			}
			return q + 1, nil
		}
		i = q + 1
	}
}

// skipValue returns the offset just past the JSON value starting at b[i].
func skipValue(b []byte, i, depth int) (int, error) {
	if i >= len(b) {
		return 0, errUnexpectedEnd
	}
	switch c := b[i]; {
	case c == '"':
		return skipString(b, i)
	case c == '{' || c == '[':
		if depth >= maxDepth {
			return 0, ErrTooDeep
		}
		return skipContainer(b, i, depth+1)
	case c == '-' || (c >= '0' && c <= '9') || c == 't' || c == 'f' || c == 'n':
		j := i + 1
		for j < len(b) {
			switch b[j] {
			case ',', '}', ']', ' ', '\t', '\n', '\r', ':', '"', '{', '[':
				return j, nil
			}
			j++
		}
		return j, nil
	default:
		return 0, fmt.Errorf("%w: unexpected %q at offset %d", ErrMalformed, c, i)
	}
}

// skipContainer skips an object or array, checking its punctuation.
func skipContainer(b []byte, i, depth int) (int, error) {
	obj := b[i] == '{'
	closer := byte(']')
	if obj {
		closer = '}'
	}
	i = skipWS(b, i+1)
	if i < len(b) && b[i] == closer {
		return i + 1, nil
	}
	for {
		var err error
		if obj {
			if i >= len(b) || b[i] != '"' {
				return 0, fmt.Errorf("%w: expected member name at offset %d", ErrMalformed, i)
			}
			if i, err = skipString(b, i); err != nil {
				return 0, err
			}
			i = skipWS(b, i)
			if i >= len(b) || b[i] != ':' {
				return 0, fmt.Errorf("%w: expected ':' at offset %d", ErrMalformed, i)
			}
			i = skipWS(b, i+1)
		}
		if i, err = skipValue(b, i, depth); err != nil {
			return 0, err
		}
		i = skipWS(b, i)
		if i >= len(b) {
			return 0, errUnexpectedEnd
		}
		switch b[i] {
		case ',':
			i = skipWS(b, i+1)
		case closer:
			return i + 1, nil
		default:
			return 0, fmt.Errorf("%w: expected ',' or %q at offset %d", ErrMalformed, closer, i)
		}
	}
}

// raw returns the bytes of s in b.
func Raw(b []byte, s Span) []byte {
	if !s.Valid() {
		return nil
	}
	return b[s.Start:s.End]
}

// Is reports whether span s of b is the JSON string lit (no escapes).
func Is(b []byte, s Span, lit string) bool {
	r := Raw(b, s)
	return len(r) == len(lit)+2 && r[0] == '"' && string(r[1:len(r)-1]) == lit
}

// Int parses span s of b as a JSON integer, or a string holding one (some
// implementations quote QQ numbers).
func Int(b []byte, s Span) (int64, bool) {
	r := Raw(b, s)
	if len(r) >= 2 && r[0] == '"' {
		r = r[1 : len(r)-1]
	}
	n, err := strconv.ParseInt(string(r), 10, 64)
	return n, err == nil
}
