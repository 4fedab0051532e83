package onebot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// Filter is an event filter in go-cqhttp's language (its
// docs/EventFilter.md), with its semantics: the top-level object is an
// implicit .and; a key starting with "." is an operator (.not, .and, .or,
// .eq, .neq, .in, .contains, .regex), any other key is a path into the
// event (sender.role, message.0.type; \ escapes a dot) whose value is tested
// by the key's object (an implicit .and) or, for any other value, by .eq.
// Values compare as strings, as go-cqhttp's gjson gives them: a string
// unescaped, an integer as written, another number in its shortest form,
// null and a missing value as "", an object or array as its raw JSON.
// .in with an array tests membership, with a string a substring of it.
//
// A Filter reads the event only through Values extracted by an Extractor
// it was bound to (Bind): one scan per event, whatever the number of
// filters.
type Filter struct {
	root   node
	leaves [][]string // the path each leaf tests, by leaf number
}

type op uint8

const (
	opAnd op = iota
	opOr
	opNot
	opEq
	opNeq
	opIn
	opContains
	opRegex
)

type node struct {
	op   op
	kids []node
	leaf int      // leaf number (eq, neq, in, contains, regex)
	str  string   // operand
	b    []byte   // the same, for bytes.Contains
	set  []string // .in with an array
	re   *regexp.Regexp
}

// FilterError is a filter that does not parse, with where.
type FilterError struct {
	Offset    int // byte offset in the filter's JSON
	Line, Col int // 1-based
	Msg       string
}

func (e *FilterError) Error() string {
	return fmt.Sprintf("line %d, column %d (byte %d): %s", e.Line, e.Col, e.Offset, e.Msg)
}

// ParseFilter compiles a filter from its JSON. Its errors are *FilterError.
func ParseFilter(src []byte) (*Filter, error) {
	p := &filterParser{src: src}
	if !json.Valid(src) {
		var se *json.SyntaxError
		if err := json.Unmarshal(src, new(any)); errors.As(err, &se) {
			return nil, p.fail(max(int(se.Offset)-1, 0), "not JSON: "+se.Error())
		}
		return nil, p.fail(0, "not JSON")
	}
	start := skipWS(src, 0)
	f := &Filter{}
	p.f = f
	root, err := p.and(Span{start, len(bytes.TrimRight(src, " \t\r\n"))}, nil, "the filter")
	if err != nil {
		return nil, err
	}
	f.root = root
	return f, nil
}

type filterParser struct {
	src []byte
	f   *Filter
}

func (p *filterParser) fail(off int, msg string) *FilterError {
	line, col := 1, 1
	for _, c := range p.src[:min(off, len(p.src))] {
		if c == '\n' {
			line, col = line+1, 1
		} else {
			col++
		}
	}
	return &FilterError{Offset: off, Line: line, Col: col, Msg: msg}
}

// and compiles the object at s as an .and over the value at path.
func (p *filterParser) and(s Span, path []string, what string) (node, error) {
	v := p.src[s.Start:s.End]
	if v[0] != '{' {
		return node{}, p.fail(s.Start, what+" must be an object")
	}
	n := node{op: opAnd}
	err := Members(v, func(rawKey []byte, _, val Span) error {
		val = Span{val.Start + s.Start, val.End + s.Start}
		keyAt := s.Start + offsetIn(v, rawKey) - 1
		var key string
		if err := json.Unmarshal(append(append([]byte{'"'}, rawKey...), '"'), &key); err != nil {
			return p.fail(keyAt, "bad key: "+err.Error())
		}
		var kid node
		var err error
		switch {
		case key == "":
			return p.fail(keyAt, "empty key")
		case key[0] == '.':
			kid, err = p.operator(key[1:], keyAt, val, path)
		default:
			sub, perr := splitPath(key)
			if perr != "" {
				return p.fail(keyAt, fmt.Sprintf("key %q: %s", key, perr))
			}
			full := append(append([]string(nil), path...), sub...)
			if p.src[val.Start] == '{' {
				kid, err = p.and(val, full, "")
			} else {
				kid = p.leaf(opEq, full, p.str(val))
			}
		}
		n.kids = append(n.kids, kid)
		return err
	})
	var fe *FilterError
	if errors.As(err, &fe) {
		return n, fe
	}
	if err != nil {
		return n, p.fail(s.Start, err.Error())
	}
	return n, nil
}

// offsetIn returns the offset of sub, a subslice of b, in b.
func offsetIn(b, sub []byte) int { return cap(b) - cap(sub) }

func (p *filterParser) leaf(o op, path []string, operand string) node {
	p.f.leaves = append(p.f.leaves, path)
	return node{op: o, leaf: len(p.f.leaves) - 1, str: operand, b: []byte(operand)}
}

// str is the string form of the filter's value at s.
func (p *filterParser) str(s Span) string { return string(StringForm(p.src, s)) }

func (p *filterParser) operator(name string, at int, val Span, path []string) (node, error) {
	first := p.src[val.Start]
	isObj, isArr := first == '{', first == '['
	switch name {
	case "and":
		return p.and(val, path, "the argument of .and")
	case "not":
		kid, err := p.and(val, path, "the argument of .not")
		return node{op: opNot, kids: []node{kid}}, err
	case "or":
		if !isArr {
			return node{}, p.fail(val.Start, "the argument of .or must be an array of objects")
		}
		n := node{op: opOr}
		err := elements(p.src, val, func(el Span) error {
			kid, err := p.and(el, path, "each element of .or")
			n.kids = append(n.kids, kid)
			return err
		})
		return n, err
	case "eq", "neq":
		o := opEq
		if name == "neq" {
			o = opNeq
		}
		return p.leaf(o, path, p.str(val)), nil
	case "in":
		if isObj {
			return node{}, p.fail(val.Start, "the argument of .in must be an array or a string")
		}
		n := p.leaf(opIn, path, "")
		if !isArr {
			n.str = p.str(val)
			n.b = []byte(n.str)
			return n, nil
		}
		n.set = []string{}
		err := elements(p.src, val, func(el Span) error {
			n.set = append(n.set, p.str(el))
			return nil
		})
		return n, err
	case "contains", "regex":
		if isObj || isArr {
			return node{}, p.fail(val.Start, "the argument of ."+name+" must be a string")
		}
		if name == "contains" {
			return p.leaf(opContains, path, p.str(val)), nil
		}
		re, err := regexp.Compile(p.str(val))
		if err != nil {
			return node{}, p.fail(val.Start, "the regex does not compile: "+err.Error())
		}
		n := p.leaf(opRegex, path, "")
		n.re = re
		return n, nil
	}
	return node{}, p.fail(at, fmt.Sprintf("unknown operator .%s (use .not .and .or .eq .neq .in .contains .regex)", name))
}

// splitPath splits a key into the components of a path: "." separates, "\"
// escapes the next character. The parts of gjson's syntax that go further
// (wildcards, #, queries, modifiers, multipaths) are refused, not guessed.
func splitPath(key string) ([]string, string) {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		switch c := key[i]; c {
		case '\\':
			if i+1 < len(key) {
				i++
				cur.WriteByte(key[i])
			}
		case '.':
			out = append(out, cur.String())
			cur.Reset()
		case '*', '?', '#', '|':
			return nil, fmt.Sprintf("%q in a path: gjson wildcards, # and queries are not supported (escape it with \\ to mean the character)", c)
		case '@', '[', '{', '!':
			if cur.Len() == 0 {
				return nil, fmt.Sprintf("%q starting a path component: gjson modifiers and multipaths are not supported (escape it with \\)", c)
			}
			cur.WriteByte(c)
		default:
			cur.WriteByte(c)
		}
	}
	return append(out, cur.String()), ""
}

// Bind returns f's matcher over the Values of x, adding to x the paths f
// reads.
func (f *Filter) Bind(x *Extractor) *Matcher {
	m := &Matcher{f: f, ids: make([]int, len(f.leaves))}
	for i, path := range f.leaves {
		m.ids[i] = x.Add(path...)
	}
	return m
}

// Matcher is a Filter bound to an Extractor.
type Matcher struct {
	f   *Filter
	ids []int
}

// Match reports whether the event b, whose Values v were extracted by the
// matcher's Extractor, passes the filter.
func (m *Matcher) Match(b []byte, v Values) bool { return m.eval(&m.f.root, b, v) }

func (m *Matcher) eval(n *node, b []byte, v Values) bool {
	switch n.op {
	case opAnd:
		for i := range n.kids {
			if !m.eval(&n.kids[i], b, v) {
				return false
			}
		}
		return true
	case opOr:
		for i := range n.kids {
			if m.eval(&n.kids[i], b, v) {
				return true
			}
		}
		return false
	case opNot:
		return !m.eval(&n.kids[0], b, v)
	}
	s := StringForm(b, v[m.ids[n.leaf]])
	switch n.op {
	case opEq:
		return string(s) == n.str
	case opNeq:
		return string(s) != n.str
	case opIn:
		if n.set != nil {
			for _, e := range n.set {
				if string(s) == e {
					return true
				}
			}
			return false
		}
		return bytes.Contains(n.b, s)
	case opContains:
		return bytes.Contains(s, n.b)
	case opRegex:
		return n.re.Match(s)
	}
	return false
}
