package policy

import (
	"fmt"
	"slices"

	"github.com/obmux/obmux/onebot"
)

// Ingest extracts from each upstream event, once, what the event checks of
// every bot's Policy read: group_id, user_id, self_id, post_type and the
// paths of their filters, in one scan shared by all of them. When some bot
// wants messages in another format than an event has, it makes that form
// of the event then, once for all of them.
type Ingest struct {
	x                       *onebot.Extractor
	group, user, self, post int
	msg, msgFormat          int // -1: no bot wants a message format
	matchers                map[*onebot.Filter]*onebot.Matcher
	// wanted: the formats some bot wants.
	wantArray, wantString bool
}

// NewIngest returns the Ingest of the policies ps, or nil when none of them
// looks into events (then nothing is extracted at all).
func NewIngest(ps ...*Policy) *Ingest {
	if !slices.ContainsFunc(ps, (*Policy).inspects) {
		return nil
	}
	x := onebot.NewExtractor()
	in := &Ingest{x: x, group: x.Add("group_id"), user: x.Add("user_id"), self: x.Add("self_id"), post: x.Add("post_type"),
		msg: -1, msgFormat: -1, matchers: map[*onebot.Filter]*onebot.Matcher{}}
	for _, p := range ps {
		if f := p.Filter; f != nil && in.matchers[f] == nil {
			in.matchers[f] = f.Bind(x)
		}
		in.wantArray = in.wantArray || p.MessageFormat == onebot.FormatArray
		in.wantString = in.wantString || p.MessageFormat == onebot.FormatString
	}
	if in.wantArray || in.wantString {
		in.msg, in.msgFormat = x.Add("message"), x.Add("message_format")
	}
	return in
}

// Event is what an Ingest extracted from one event, shared by every peer
// and never modified.
type Event struct {
	vals              onebot.Values
	group, user, self int64
	hasGroup, hasUser bool
	post              post
	inline            [8]onebot.Span // vals' storage for up to 8 paths
	conv              *converted     // nil: no other form wanted of it
}

// converted is the other form of a message event that some bot wants.
type converted struct {
	form onebot.MessageFormat // the form of the event's own message
	alt  []byte               // the event in the other form; nil: not made
	err  error                // why it could not be made
}

// Bytes returns the memory ev holds beyond the event: the other form of
// it, when one was made.
func (ev *Event) Bytes() int64 {
	if ev == nil || ev.conv == nil {
		return 0
	}
	return int64(cap(ev.conv.alt))
}

// Err returns why the event could not be converted to a message format
// that some bot wants (those bots get it as the upstream sent it), or nil.
func (ev *Event) Err() error {
	if ev == nil || ev.conv == nil {
		return nil
	}
	return ev.conv.err
}

type post uint8

const (
	postOther post = iota
	postMessage
	postSent
)

// Event extracts what in's checks need from event b (a frame onebot.Scan
// accepted). A nil Ingest returns nil, which every check lets through.
func (in *Ingest) Event(b []byte) *Event {
	if in == nil {
		return nil
	}
	ev := &Event{}
	ev.vals = in.x.Extract(b, ev.inline[:0])
	ev.group, ev.hasGroup = present(b, ev.vals[in.group])
	ev.user, ev.hasUser = present(b, ev.vals[in.user])
	ev.self, _ = onebot.Int(b, ev.vals[in.self])
	switch s := ev.vals[in.post]; {
	case onebot.Is(b, s, "message"):
		ev.post = postMessage
	case onebot.Is(b, s, "message_sent"):
		ev.post = postSent
	}
	if in.msg >= 0 && ev.post != postOther {
		in.convert(b, ev)
	}
	return ev
}

// convert makes the other form of message event b, when a bot wants it.
func (in *Ingest) convert(b []byte, ev *Event) {
	msg := ev.vals[in.msg]
	var to onebot.MessageFormat
	form := onebot.FormatOf(b, msg)
	switch {
	case form == onebot.FormatArray && in.wantString:
		to = onebot.FormatString
	case form == onebot.FormatString && in.wantArray:
		to = onebot.FormatArray
	default:
		return
	}
	c := &converted{form: form}
	c.alt, c.err = onebot.ConvertEvent(b, msg, ev.vals[in.msgFormat], to)
	if c.err != nil {
		c.err = fmt.Errorf("message_format %s: %w", to, c.err)
	}
	ev.conv = c
}

// present reads a QQ number at s: whether the member is there (and not
// null), and its value (0 when it is not a number).
func present(b []byte, s onebot.Span) (int64, bool) {
	if !s.Valid() || onebot.Raw(b, s)[0] == 'n' {
		return 0, false
	}
	n, _ := onebot.Int(b, s)
	return n, true
}

// Check is one bot's event checks, bound to the Ingest whose Events it
// reads.
type Check struct {
	p       *Policy
	m       *onebot.Matcher
	filters bool // p holds back some events
}

// Check returns p's event checks over in's Events, or nil when p lets
// every event through. p must be one of the policies in was made of.
func (in *Ingest) Check(p *Policy) *Check {
	if p == nil || !p.inspects() {
		return nil
	}
	if in == nil {
		panic("policy: Check of a policy that inspects events, with no Ingest made of it")
	}
	c := &Check{p: p, filters: p.filters()}
	if p.Filter != nil {
		if c.m = in.matchers[p.Filter]; c.m == nil {
			panic("policy: Check of a filter its Ingest was not made of")
		}
	}
	return c
}

// Pass reports whether event b, extracted as ev, reaches the bot. A nil
// Check or Event passes everything.
func (c *Check) Pass(b []byte, ev *Event) bool {
	if c == nil || ev == nil || !c.filters {
		return true
	}
	p := c.p
	if ev.hasGroup {
		if len(p.Groups) > 0 && !has(p.Groups, ev.group) || has(p.GroupsDeny, ev.group) {
			return false
		}
	}
	if ev.hasUser && has(p.UsersDeny, ev.user) {
		return false
	}
	if p.NoSelfMessages && (ev.post == postSent || ev.post == postMessage && ev.hasUser && ev.user == ev.self) {
		return false
	}
	return c.m == nil || c.m.Match(b, ev.vals)
}

// Frame returns event b, extracted as ev, as the bot gets it: with its
// message in the bot's format. It is b itself, or the other form of it that
// ev holds, shared by every bot that wants that format; never a copy of
// its own. It reports false when the bot wanted the other form and it could
// not be made (see Event.Err): the bot gets b.
func (c *Check) Frame(b []byte, ev *Event) ([]byte, bool) {
	if c == nil || ev == nil || ev.conv == nil || c.p.MessageFormat == onebot.FormatAsIs || c.p.MessageFormat == ev.conv.form {
		return b, true
	}
	if ev.conv.alt == nil {
		return b, ev.conv.err == nil
	}
	return ev.conv.alt, true
}

// has reports whether the sorted ids hold id.
func has(ids []int64, id int64) bool {
	if len(ids) <= 8 {
		return slices.Contains(ids, id)
	}
	_, ok := slices.BinarySearch(ids, id)
	return ok
}
