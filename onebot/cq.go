package onebot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// MessageFormat is how a message is written in a frame: an array of
// segments or a CQ-code string (NapCat's messagePostFormat).
type MessageFormat string

// Message formats.
const (
	// FormatAsIs leaves messages as the upstream wrote them.
	FormatAsIs MessageFormat = ""
	// FormatArray is the array of segments:
	// [{"type":"text","data":{"text":"hi"}},{"type":"at","data":{"qq":"123"}}].
	FormatArray MessageFormat = "array"
	// FormatString is the CQ-code string: "hi[CQ:at,qq=123]".
	FormatString MessageFormat = "string"
)

// ParseMessageFormat reads a message format as configured: empty, array or
// string.
func ParseMessageFormat(s string) (MessageFormat, error) {
	switch f := MessageFormat(s); f {
	case FormatAsIs, FormatArray, FormatString:
		return f, nil
	}
	return "", errors.New(`not a message format (array or string; empty: as the upstream sends it)`)
}

// ErrNotCQ is wrapped by EncodeCQ's errors: the message is not an array of
// segments that a CQ-code string can express.
var ErrNotCQ = errors.New("not expressible as CQ code")

// EncodeCQ appends to dst the CQ-code string of msg, a message array as
// raw JSON (a value Scan accepted the frame of), as the OneBot v11 spec
// writes it: a text segment is its text with & [ ] escaped (&amp; &#91;
// &#93;), any other segment [CQ:type,key=value,...] with , escaped too
// (&#44;) in values. In CQ form every value is a string: a JSON string is
// unescaped, a number, true or false is written as it stands, an object or
// array as its compact JSON; a null or empty value is left out, as NapCat
// does (its raw_message has no "summary=" for an empty summary). The order
// of the data members is kept.
//
// When quote is true, what is appended is a JSON string literal of the CQ
// code (quotes included) instead, in one pass.
//
// A message that is not an array of objects with a string "type", a type or
// key that CQ code cannot hold (empty, or with one of [ ] , = & " \ or a
// space or control character), or a key twice in one segment's data is an error
// wrapping ErrNotCQ, and dst is returned as it was.
func EncodeCQ(dst, msg []byte, quote bool) ([]byte, error) {
	start := len(dst)
	i := skipWS(msg, 0)
	end, err := skipValue(msg, i, 0)
	if err != nil || msg[i] != '[' || skipWS(msg, end) != len(msg) {
		return dst, fmt.Errorf("%w: the message is not a JSON array", ErrNotCQ)
	}
	if quote {
		dst = append(dst, '"')
	}
	idx := 0
	err = elements(msg, Span{i, end}, func(el Span) error {
		var err error
		dst, err = encodeSegment(dst, msg[el.Start:el.End], quote)
		if err != nil {
			return fmt.Errorf("%w: segment %d: %s", ErrNotCQ, idx, err.Error())
		}
		idx++
		return nil
	})
	if err != nil {
		return dst[:start], err
	}
	if quote {
		dst = append(dst, '"')
	}
	return dst, nil
}

// encodeSegment appends the CQ form of one segment, seg (raw JSON).
func encodeSegment(dst, seg []byte, quote bool) ([]byte, error) {
	var typ, data Span
	err := Members(seg, func(key []byte, _, val Span) error {
		var dup bool
		switch {
		case keyIs(key, "type"):
			dup, typ = typ.Valid(), val
		case keyIs(key, "data"):
			dup, data = data.Valid(), val
		}
		if dup {
			return fmt.Errorf("two %q members", key)
		}
		return nil
	})
	if err != nil {
		return dst, err
	}
	if !typ.Valid() || seg[typ.Start] != '"' {
		return dst, errors.New(`no string "type"`)
	}
	if data.Valid() && seg[data.Start] != '{' && seg[data.Start] != 'n' {
		return dst, errors.New(`"data" is not an object`)
	}
	name, err := unquote(Raw(seg, typ))
	if err != nil {
		return dst, err
	}
	if string(name) == "text" {
		return encodeText(dst, seg, data, quote)
	}
	if !isName(name) {
		return dst, fmt.Errorf("type %q cannot be written in CQ code", name)
	}
	start := len(dst)
	dst = append(dst, "[CQ:"...)
	dst = appendEscaped(dst, name, false, quote)
	// Every key, unescaped, also those whose value is left out: a key
	// twice is refused whichever of the two a decoder would keep.
	var nameBuf [256]byte
	var spans [8]Span
	names, seen := nameBuf[:0], spans[:0]
	if data.Valid() && seg[data.Start] == '{' {
		err = Members(seg[data.Start:data.End], func(key []byte, _, val Span) error {
			k := len(names)
			var err error
			if names, err = appendUnquoted(names, key); err != nil {
				return err
			}
			name := names[k:]
			for _, s := range seen {
				if bytes.Equal(names[s.Start:s.End], name) {
					return fmt.Errorf("key %q twice", name)
				}
			}
			seen = append(seen, Span{k, len(names)})
			v := seg[data.Start+val.Start : data.Start+val.End]
			if v[0] == 'n' || string(v) == `""` {
				return nil // null and empty: left out, as NapCat does
			}
			if !isName(name) {
				return fmt.Errorf("key %q cannot be written in CQ code", name)
			}
			dst = append(append(dst, ','), name...)
			dst = append(dst, '=')
			dst, err = appendValue(dst, v, true, quote)
			return err
		})
		if err != nil {
			return dst[:start], err
		}
	}
	return append(dst, ']'), nil
}

// encodeText appends a text segment's text, escaped. Its other data members,
// if any, have no place in CQ code.
func encodeText(dst, seg []byte, data Span, quote bool) ([]byte, error) {
	if !data.Valid() || seg[data.Start] != '{' {
		return dst, nil
	}
	var text Span
	Members(seg[data.Start:data.End], func(key []byte, _, val Span) error {
		if !text.Valid() && keyIs(key, "text") {
			text = Span{data.Start + val.Start, data.Start + val.End}
		}
		return nil
	})
	if !text.Valid() || seg[text.Start] == 'n' {
		return dst, nil
	}
	return appendValue(dst, seg[text.Start:text.End], false, quote)
}

// appendValue appends the CQ form of the JSON value v, escaped (, too when
// comma is true).
func appendValue(dst, v []byte, comma, quote bool) ([]byte, error) {
	switch v[0] {
	case '"':
		s, err := unquote(v)
		if err != nil {
			return dst, err
		}
		return appendEscaped(dst, s, comma, quote), nil
	case '{', '[':
		return appendCompact(dst, v, comma, quote), nil
	}
	return appendEscaped(dst, v, comma, quote), nil
}

// appendCompact appends the object or array v (checked by skipValue) as
// compact JSON, escaped as appendEscaped does: the whitespace between its
// tokens left out, its strings as they are.
func appendCompact(dst, v []byte, comma, quote bool) []byte {
	for i := 0; i < len(v); {
		switch v[i] {
		case ' ', '\t', '\n', '\r':
			i++
			continue
		}
		j := i + 1
		if v[i] == '"' {
			if end, err := skipString(v, i); err == nil {
				j = end
			} else {
				j = len(v)
			}
		} else {
			for j < len(v) && v[j] != '"' && v[j] != ' ' && v[j] != '\t' && v[j] != '\n' && v[j] != '\r' {
				j++
			}
		}
		dst = appendEscaped(dst, v[i:j], comma, quote)
		i = j
	}
	return dst
}

// isName reports whether s can be a CQ code's type or key: not empty, and
// only bytes that nameByte accepts.
func isName(s []byte) bool {
	for _, c := range s {
		if !nameByte(c) {
			return false
		}
	}
	return len(s) > 0
}

// nameByte reports whether c may be part of a type or key: not a space or
// control character, not one that ends a name or that CQ or JSON escaping
// would change ([ ] , = & " \).
func nameByte(c byte) bool {
	switch c {
	case '[', ']', ',', '=', '&', '"', '\\':
		return false
	}
	return c > ' '
}

// appendEscaped appends s with CQ escaping (& [ ], and , when comma is
// true), and JSON string escaping on top when quote is true.
func appendEscaped(dst, s []byte, comma, quote bool) []byte {
	last := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		var rep string
		switch {
		case c == '&':
			rep = "&amp;"
		case c == '[':
			rep = "&#91;"
		case c == ']':
			rep = "&#93;"
		case c == ',' && comma:
			rep = "&#44;"
		case quote && (c == '"' || c == '\\' || c < 0x20):
		default:
			continue
		}
		dst = append(dst, s[last:i]...)
		if rep == "" {
			dst = appendJSONEscape(dst, c)
		} else {
			dst = append(dst, rep...)
		}
		last = i + 1
	}
	return append(dst, s[last:]...)
}

// appendJSONEscape appends the JSON escape of c, a quote, a backslash or a
// control character.
func appendJSONEscape(dst []byte, c byte) []byte {
	switch c {
	case '"', '\\':
		return append(dst, '\\', c)
	case '\n':
		return append(dst, `\n`...)
	case '\r':
		return append(dst, `\r`...)
	case '\t':
		return append(dst, `\t`...)
	}
	const hex = "0123456789abcdef"
	return append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&15])
}

// appendJSONString appends s as a JSON string literal.
func appendJSONString(dst, s []byte) []byte {
	dst = append(dst, '"')
	last := 0
	for i, c := range s {
		if c == '"' || c == '\\' || c < 0x20 {
			dst = append(dst, s[last:i]...)
			dst = appendJSONEscape(dst, c)
			last = i + 1
		}
	}
	dst = append(append(dst, s[last:]...), '"')
	return dst
}

// unquote returns the content of the JSON string literal q: q's own bytes
// when it has no escapes, else a copy unescaped.
func unquote(q []byte) ([]byte, error) {
	if len(q) < 2 || q[0] != '"' {
		return nil, errors.New("not a JSON string")
	}
	if bytes.IndexByte(q, '\\') < 0 {
		return q[1 : len(q)-1], nil
	}
	var s string
	if err := json.Unmarshal(q, &s); err != nil {
		return nil, fmt.Errorf("bad JSON string: %w", err)
	}
	return []byte(s), nil
}

// appendUnquoted appends a member name as written (without quotes, maybe
// with escapes), unescaped.
func appendUnquoted(dst, raw []byte) ([]byte, error) {
	if bytes.IndexByte(raw, '\\') < 0 {
		return append(dst, raw...), nil
	}
	q := make([]byte, 0, len(raw)+2)
	s, err := unquote(append(append(append(q, '"'), raw...), '"'))
	return append(dst, s...), err
}

// DecodeCQ appends to dst the message array (JSON) of the CQ-code string s
// (unquoted): the text between codes becomes text segments, unescaped, and
// each [CQ:type,key=value,...] a segment whose data values are strings,
// unescaped (&#44; &#91; &#93; and, last, &amp;). A string that does not
// parse as CQ code (a "[CQ:" that is not closed, a parameter without "=",
// an empty or invalid type or key, a key twice) becomes one text segment of
// the whole string, unescaped, rather than failing. An empty string is an
// empty array.
func DecodeCQ(dst, s []byte) []byte {
	start := len(dst)
	dst = append(dst, '[')
	pos := 0
	for pos < len(s) {
		i := bytes.Index(s[pos:], []byte("[CQ:"))
		if i < 0 {
			i = len(s) - pos
		}
		if i > 0 {
			dst = appendTextSegment(dst, s[pos:pos+i])
		}
		pos += i
		if pos == len(s) {
			break
		}
		var ok bool
		if dst, pos, ok = decodeCode(dst, s, pos); !ok {
			dst = append(dst[:start], '[')
			dst = appendTextSegment(dst, s)
			break
		}
	}
	return append(dst, ']')
}

// appendTextSegment appends a text segment of CQ text t, unescaped, with a
// comma before it unless it is the array's first element.
func appendTextSegment(dst, t []byte) []byte {
	if dst[len(dst)-1] != '[' {
		dst = append(dst, ',')
	}
	dst = append(dst, `{"type":"text","data":{"text":`...)
	dst = appendUnescapedJSON(dst, t)
	return append(dst, "}}"...)
}

// decodeCode appends the segment of the CQ code at s[pos:] ("[CQ:...") and
// returns the offset after it, or false when it does not parse.
func decodeCode(dst, s []byte, pos int) ([]byte, int, bool) {
	j := pos + len("[CQ:")
	n := nameEnd(s, j)
	if n == j || n == len(s) || s[n] != ',' && s[n] != ']' {
		return dst, 0, false
	}
	if dst[len(dst)-1] != '[' {
		dst = append(dst, ',')
	}
	dst = append(dst, `{"type":`...)
	dst = appendJSONString(dst, s[j:n])
	dst = append(dst, `,"data":{`...)
	first := n + 1 // where the first key starts
	for j = n; s[j] == ','; {
		k := j + 1
		ke := nameEnd(s, k)
		if ke == k || ke == len(s) || s[ke] != '=' {
			return dst, 0, false
		}
		for p := first; p < k; {
			pe := nameEnd(s, p)
			if bytes.Equal(s[p:pe], s[k:ke]) {
				return dst, 0, false
			}
			p = bytes.IndexByte(s[pe:k], ',') + pe + 1
		}
		v := ke + 1
		ve := v
		for ve < len(s) && s[ve] != ',' && s[ve] != ']' {
			ve++
		}
		if ve == len(s) {
			return dst, 0, false
		}
		if k > first {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, s[k:ke])
		dst = append(dst, ':')
		dst = appendUnescapedJSON(dst, s[v:ve])
		j = ve
	}
	return append(dst, "}}"...), j + 1, true
}

// nameEnd returns the offset after the name starting at s[i:].
func nameEnd(s []byte, i int) int {
	for i < len(s) {
		if !nameByte(s[i]) {
			return i
		}
		i++
	}
	return i
}

// appendUnescapedJSON appends CQ text t as a JSON string literal with CQ
// escaping undone: &#44; &#91; &#93; and &amp; (in one pass from left to
// right, which is the same as undoing &amp; last).
func appendUnescapedJSON(dst, t []byte) []byte {
	dst = append(dst, '"')
	last := 0
	for i := 0; i < len(t); i++ {
		c := t[i]
		switch {
		case c == '&':
			var r byte
			switch {
			case bytes.HasPrefix(t[i:], []byte("&amp;")):
				r = '&'
			case bytes.HasPrefix(t[i:], []byte("&#91;")):
				r = '['
			case bytes.HasPrefix(t[i:], []byte("&#93;")):
				r = ']'
			case bytes.HasPrefix(t[i:], []byte("&#44;")):
				r = ','
			default:
				continue
			}
			dst = append(append(dst, t[last:i]...), r)
			i += 4
			last = i + 1
		case c == '"' || c == '\\' || c < 0x20:
			dst = appendJSONEscape(append(dst, t[last:i]...), c)
			last = i + 1
		}
	}
	return append(append(dst, t[last:]...), '"')
}
