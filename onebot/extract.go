package onebot

import (
	"bytes"
	"encoding/json"
	"errors"
	"strconv"
)

// Values are the spans, in one event, of the paths of an Extractor, by the
// id Add gave each path; a path the event does not have has an invalid span.
type Values []Span

// Extractor finds the values of a fixed set of paths in an event in one
// scan: the event's top level once, and only the members on a wanted path
// below it (other values are skipped, not decoded). Add every path before
// the first Extract; Extract may then be called from any goroutine.
type Extractor struct {
	root xnode
	n    int
}

type xnode struct {
	id   int // -1: not itself wanted, only on the way to a wanted path
	kids []xkid
}

type xkid struct {
	key string
	idx int // key as an array index, or -1
	n   *xnode
}

// NewExtractor returns an Extractor of no paths.
func NewExtractor() *Extractor { return &Extractor{root: xnode{id: -1}} }

// Add adds the path of components (a key of an object or an index of an
// array each; none: the whole event) and returns its id. Adding a path
// twice returns the same id.
func (x *Extractor) Add(path ...string) int {
	n := &x.root
	for _, k := range path {
		var next *xnode
		for _, kid := range n.kids {
			if kid.key == k {
				next = kid.n
				break
			}
		}
		if next == nil {
			next = &xnode{id: -1}
			idx := -1
			if i, err := strconv.Atoi(k); err == nil && isDigits(k) {
				idx = i
			}
			n.kids = append(n.kids, xkid{k, idx, next})
		}
		n = next
	}
	if n.id < 0 {
		n.id = x.n
		x.n++
	}
	return n.id
}

// Len returns how many paths x has.
func (x *Extractor) Len() int { return x.n }

// Extract returns the Values of event b (a frame Scan accepted), in dst's
// storage when it is large enough.
func (x *Extractor) Extract(b []byte, dst Values) Values {
	if cap(dst) < x.n {
		dst = make(Values, x.n)
	}
	dst = dst[:x.n]
	clear(dst)
	whole := Span{skipWS(b, 0), len(bytes.TrimRight(b, " \t\r\n"))}
	x.root.walk(b, whole, dst)
	return dst
}

var errFound = errors.New("found")

// walk records the values below the container at s.
func (n *xnode) walk(b []byte, s Span, dst Values) {
	if n.id >= 0 {
		dst[n.id] = s
	}
	if len(n.kids) == 0 || !s.Valid() {
		return
	}
	left := len(n.kids)
	var found uint64 // bit i: kid i found (the first match wins, as in gjson)
	visit := func(i int, val Span) {
		if i < 64 && found&(1<<i) != 0 {
			return
		}
		if i < 64 {
			found |= 1 << i
		}
		left--
		n.kids[i].n.walk(b, val, dst)
	}
	switch b[s.Start] {
	case '{':
		v := b[s.Start:s.End]
		Members(v, func(key []byte, _, val Span) error {
			for i, kid := range n.kids {
				if keyIs(key, kid.key) {
					visit(i, Span{val.Start + s.Start, val.End + s.Start})
				}
			}
			if left <= 0 {
				return errFound
			}
			return nil
		})
	case '[':
		idx := 0
		elements(b, s, func(el Span) error {
			for i, kid := range n.kids {
				if kid.idx == idx {
					visit(i, el)
				}
			}
			idx++
			if left <= 0 {
				return errFound
			}
			return nil
		})
	}
}

func isDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

// keyIs reports whether the raw (still escaped) member name raw is key.
func keyIs(raw []byte, key string) bool {
	if bytes.IndexByte(raw, '\\') < 0 {
		return string(raw) == key
	}
	var k string
	if json.Unmarshal(append(append([]byte{'"'}, raw...), '"'), &k) != nil {
		return false
	}
	return k == key
}

// elements calls fn with the span of every element of the array at s of b.
func elements(b []byte, s Span, fn func(Span) error) error {
	i := skipWS(b, s.Start+1)
	if i < s.End && b[i] == ']' {
		return nil
	}
	for i < s.End {
		end, err := skipValue(b, i, 1)
		if err != nil {
			return err
		}
		if err := fn(Span{i, end}); err != nil {
			return err
		}
		i = skipWS(b, end)
		if i >= s.End || b[i] != ',' {
			return nil
		}
		i = skipWS(b, i+1)
	}
	return nil
}

// StringForm returns the value at s of b as a filter compares it, the
// string gjson's Result.String gives: a string unescaped, an integer as
// written, another number in its shortest decimal form, true and false,
// null and a missing value (an invalid span) as empty, an object or array
// as its raw JSON. It allocates only for a string with escapes and a
// number that is not an integer.
func StringForm(b []byte, s Span) []byte {
	if !s.Valid() {
		return nil
	}
	r := b[s.Start:s.End]
	switch c := r[0]; {
	case c == '"':
		in := r[1 : len(r)-1]
		if bytes.IndexByte(in, '\\') < 0 {
			return in
		}
		var str string
		if json.Unmarshal(r, &str) != nil {
			return in
		}
		return []byte(str)
	case c == 'n':
		return nil
	case c == '-' || (c >= '0' && c <= '9'):
		digits := r
		if c == '-' {
			digits = r[1:]
		}
		if isDigits(string(digits)) {
			return r
		}
		f, err := strconv.ParseFloat(string(r), 64)
		if err != nil {
			return r
		}
		return strconv.AppendFloat(nil, f, 'f', -1, 64)
	}
	return r
}
