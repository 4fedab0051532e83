package onebot

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"unicode/utf8"
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
	ErrInvalidUTF8   = errors.New("invalid UTF-8")
	errUnexpectedEnd = fmt.Errorf("%w: unexpected end", ErrMalformed)
)

// maxDepth bounds nesting so that a hostile frame cannot make skipping it
// expensive in memory; no OneBot frame comes near it.
const maxDepth = 512

// Scan reads the top level of a JSON object frame and records where the
// members obmux uses are. Nested values are skipped, not decoded: strings are
// skipped with a vectorised search for the closing quote, so a 600 KB image
// event costs a memchr and a check of eight bytes at a time. Scan accepts
// exactly the frames that are valid JSON (RFC 8259, as json.Valid): the
// structure, every number and literal (no "nulx", "tru", "01"), every
// escape, no control character inside a string, and valid UTF-8
// (ErrInvalidUTF8), so that obmux never passes on, or echoes back, what a
// strict peer would refuse (1007, or a parse error).
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

// skipString returns the offset just past the string starting at b[i] == '"',
// checking what is inside: valid escapes, no control character, valid UTF-8.
func skipString(b []byte, i int) (int, error) {
	i++
	start := i
	// A short string of printable ASCII (member names, most values) is
	// walked once, a byte at a time; any other goes the general way.
	for j := i; j < len(b) && j-start < longString; j++ {
		if c := b[j]; !plainASCII[c] {
			if c == '"' {
				return j + 1, nil
			}
			break
		}
	}
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
			return q + 1, checkString(b, start, q)
		}
		i = q + 1
	}
}

// plainASCII holds the bytes that stand for themselves in a JSON string
// with nothing to check: printable ASCII but '"' and '\\'.
var plainASCII = func() (t [256]bool) {
	for c := 0x20; c < 0x80; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// SWAR constants: a byte repeated in every byte of a word.
const (
	ones  = 0x0101010101010101
	highs = 0x8080808080808080
)

// longString is the length from which checkString finds backslashes with a
// vectorised search and checks the bytes between them eight at a time.
const longString = 32

// checkString checks the inside of a string, b[i:end]: every escape is one
// of JSON's, no byte is below 0x20, and the rest is valid UTF-8. Printable
// ASCII is passed over eight bytes at a time; at the first byte of 0x80 or
// over, utf8.Valid checks the rest of the string at once.
func checkString(b []byte, i, end int) error {
	utf8OK := false // b[i:end] is known to be valid UTF-8
	for i < end {
		if end-i >= longString {
			stop := end
			if k := bytes.IndexByte(b[i:end], '\\'); k >= 0 {
				stop = i + k
			}
			high := uint64(highs) // stop at bytes of 0x80 and over
			if utf8OK {
				high = 0
			}
			i = printable(b, i, stop, high)
		}
		for i < end && b[i] >= 0x20 && b[i] != '\\' && (b[i] < 0x80 || utf8OK) {
			i++
		}
		if i >= end {
			return nil
		}
		switch c := b[i]; {
		case c < 0x20:
			return fmt.Errorf("%w: control character %#02x in a string at offset %d", ErrMalformed, c, i)
		case c == '\\':
			for i < end && b[i] == '\\' { // a run of escapes (\u4e2d\u6587...) in one go
				n, err := escapeLen(b[i:end])
				if err != nil {
					return fmt.Errorf("%w at offset %d", err, i)
				}
				i += n
			}
		default:
			if !utf8.Valid(b[i:end]) {
				return fmt.Errorf("%w in a string at offset %d", ErrInvalidUTF8, i+validPrefix(b[i:end]))
			}
			utf8OK = true
		}
	}
	return nil
}

// validPrefix returns the length of the longest valid UTF-8 prefix of s.
func validPrefix(s []byte) int {
	n := 0
	for n < len(s) {
		r, size := utf8.DecodeRune(s[n:])
		if r == utf8.RuneError && size <= 1 {
			break
		}
		n += size
	}
	return n
}

// printable returns the offset of the first byte of b[i:stop] below 0x20
// (or, with high set to highs, of 0x80 and over), or where the last whole
// word of b[i:stop] ends. Per word x, a byte below 0x20 borrows in
// x-0x20.. and so has its high bit set there and not in x; a byte of 0x80
// and over has it in x. The lowest flagged byte is exact (a borrow only
// disturbs the bytes above it).
func printable(b []byte, i, stop int, high uint64) int {
	const spaces = ones * 0x20
	for i+32 <= stop {
		w := b[i : i+32 : i+32]
		x0 := binary.LittleEndian.Uint64(w[0:8])
		x1 := binary.LittleEndian.Uint64(w[8:16])
		x2 := binary.LittleEndian.Uint64(w[16:24])
		x3 := binary.LittleEndian.Uint64(w[24:32])
		var m uint64
		if high != 0 { // x|(x-0x20..) is the same, in fewer instructions
			m = x0 | (x0 - spaces) | x1 | (x1 - spaces) | x2 | (x2 - spaces) | x3 | (x3 - spaces)
		} else {
			m = (x0-spaces)&^x0 | (x1-spaces)&^x1 | (x2-spaces)&^x2 | (x3-spaces)&^x3
		}
		if m&highs != 0 {
			break
		}
		i += 32
	}
	for i+8 <= stop {
		x := binary.LittleEndian.Uint64(b[i:])
		if m := (x&high | (x-spaces)&^x) & highs; m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
		i += 8
	}
	return i
}

// escapeLen returns the length of the escape sequence at the start of e.
func escapeLen(e []byte) (int, error) {
	if len(e) >= 2 {
		switch e[1] {
		case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
			return 2, nil
		case 'u':
			if len(e) >= 6 && isHex(e[2]) && isHex(e[3]) && isHex(e[4]) && isHex(e[5]) {
				return 6, nil
			}
		}
	}
	return 0, fmt.Errorf("%w: bad escape %q", ErrMalformed, e[:min(len(e), 6)])
}

func isHex(c byte) bool { return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F' }

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

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
	case c == '-' || isDigit(c):
		return skipNumber(b, i)
	case c == 't':
		return skipLiteral(b, i, "true")
	case c == 'f':
		return skipLiteral(b, i, "false")
	case c == 'n':
		return skipLiteral(b, i, "null")
	default:
		return 0, fmt.Errorf("%w: unexpected %q at offset %d", ErrMalformed, c, i)
	}
}

// skipLiteral returns the offset just past lit at b[i]; what follows is
// checked by the caller (a delimiter, or an error).
func skipLiteral(b []byte, i int, lit string) (int, error) {
	if !bytes.HasPrefix(b[i:], []byte(lit)) {
		return 0, fmt.Errorf("%w: bad literal %q at offset %d (want %s)", ErrMalformed, b[i:min(len(b), i+len(lit))], i, lit)
	}
	return i + len(lit), nil
}

// skipNumber returns the offset just past the JSON number at b[i]:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func skipNumber(b []byte, i int) (int, error) {
	start := i
	if b[i] == '-' {
		i++
	}
	switch {
	case i < len(b) && b[i] == '0':
		if i++; i < len(b) && isDigit(b[i]) {
			return 0, badNumber(start) // a leading zero
		}
	case i < len(b) && isDigit(b[i]):
		i = skipDigits(b, i)
	default:
		return 0, badNumber(start)
	}
	if i < len(b) && b[i] == '.' {
		if i++; i >= len(b) || !isDigit(b[i]) {
			return 0, badNumber(start)
		}
		i = skipDigits(b, i)
	}
	if i < len(b) && (b[i] == 'e' || b[i] == 'E') {
		if i++; i < len(b) && (b[i] == '+' || b[i] == '-') {
			i++
		}
		if i >= len(b) || !isDigit(b[i]) {
			return 0, badNumber(start)
		}
		i = skipDigits(b, i)
	}
	return i, nil
}

func skipDigits(b []byte, i int) int {
	for i < len(b) && isDigit(b[i]) {
		i++
	}
	return i
}

func badNumber(at int) error { return fmt.Errorf("%w: bad number at offset %d", ErrMalformed, at) }

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
