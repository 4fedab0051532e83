package onebot

import (
	"cmp"
	"slices"
)

// FormatOf returns the form of the message value at s of b: FormatArray for
// a JSON array, FormatString for a JSON string, FormatAsIs for anything
// else (no message, null).
func FormatOf(b []byte, s Span) MessageFormat {
	if !s.Valid() {
		return FormatAsIs
	}
	switch b[s.Start] {
	case '[':
		return FormatArray
	case '"':
		return FormatString
	}
	return FormatAsIs
}

// ConvertMessage appends to dst the message msg (a raw JSON value: an array
// of segments or a JSON string of CQ code) written in format to, and
// reports whether it did: not when msg is already in that form, when to is
// FormatAsIs, or when msg is neither (dst is then returned as it was). An
// array that CQ code cannot express is an error wrapping ErrNotCQ; a string
// is always converted (see DecodeCQ).
func ConvertMessage(dst, msg []byte, to MessageFormat) ([]byte, bool, error) {
	if len(msg) == 0 || to == FormatAsIs {
		return dst, false, nil
	}
	switch {
	case to == FormatString && msg[0] == '[':
		out, err := EncodeCQ(dst, msg, true)
		return out, err == nil, err
	case to == FormatArray && msg[0] == '"':
		s, err := unquote(msg)
		if err != nil {
			return dst, false, err
		}
		return DecodeCQ(dst, s), true, nil
	}
	return dst, false, nil
}

// edit is one change to a frame: the bytes at at replaced (at.Start ==
// at.End: inserted there) with lit, or, when conv, with the message at at
// converted.
type edit struct {
	at   Span
	conv bool
	lit  string
}

// messageEdits appends the edits that write the message at msg (its value
// in b) in format to and set the message_format member beside it (its
// value at mf; invalid: none, so one is added after the message). It
// appends nothing when the message is already in that form or is not a
// message.
func messageEdits(eds []edit, b []byte, msg, mf Span, to MessageFormat) []edit {
	have := FormatOf(b, msg)
	if have == FormatAsIs || to == FormatAsIs || have == to {
		return eds
	}
	eds = append(eds, edit{at: msg, conv: true})
	lit, member := `"array"`, `,"message_format":"array"`
	if to == FormatString {
		lit, member = `"string"`, `,"message_format":"string"`
	}
	if mf.Valid() {
		return append(eds, edit{at: mf, lit: lit})
	}
	return append(eds, edit{at: Span{msg.End, msg.End}, lit: member})
}

// apply returns b with eds made, or nil when there are none. On an error
// (a message CQ code cannot express) it returns nil and the error.
func apply(b []byte, eds []edit, to MessageFormat) ([]byte, error) {
	if len(eds) == 0 {
		return nil, nil
	}
	slices.SortStableFunc(eds, func(x, y edit) int { return cmp.Compare(x.at.Start, y.at.Start) })
	// A CQ string is mostly shorter than its array; an array of a string
	// longer, by about half for a typical message.
	size := len(b) + 64
	for _, e := range eds {
		if e.conv && to == FormatArray {
			size += (e.at.End - e.at.Start) / 2
		}
	}
	out := make([]byte, 0, size)
	last := 0
	for _, e := range eds {
		out = append(out, b[last:e.at.Start]...)
		if e.conv {
			var err error
			if out, _, err = ConvertMessage(out, b[e.at.Start:e.at.End], to); err != nil {
				return nil, err
			}
		} else {
			out = append(out, e.lit...)
		}
		last = e.at.End
	}
	return append(out, b[last:]...), nil
}

// ConvertEvent returns a copy of event b with its message, the value at
// msg, written in format to and its message_format (the value at mf;
// invalid: none, then one is added after the message) set to match; the
// rest of the frame, raw_message included, is kept byte for byte. It
// returns nil when there is nothing to convert: no message, or one already
// in that form. msg and mf are the spans of b's top-level "message" and
// "message_format" (an Extractor's or Members').
func ConvertEvent(b []byte, msg, mf Span, to MessageFormat) ([]byte, error) {
	var buf [2]edit
	return apply(b, messageEdits(buf[:0], b, msg, mf, to), to)
}

// MessageSpans returns the spans of event b's top-level "message" and
// "message_format" values, as ConvertEvent takes them (invalid where b has
// none), and Members' error when b is not a JSON object it can walk. It
// scans b once; a relay converting every event finds them with its
// Extractor instead.
func MessageSpans(b []byte) (msg, mf Span, err error) {
	err = Members(b, func(key []byte, _, val Span) error {
		switch string(key) {
		case "message":
			msg = val
		case "message_format":
			mf = val
		}
		return nil
	})
	return msg, mf, err
}

// Actions whose responses carry messages that ConvertResponse converts.
const (
	ActionGetMsg        = "get_msg"
	ActionGetForwardMsg = "get_forward_msg"
	// NapCat's and go-cqhttp's message histories: data.messages like
	// get_forward_msg's.
	ActionGroupMsgHistory  = "get_group_msg_history"
	ActionFriendMsgHistory = "get_friend_msg_history"
)

// MessageAction returns the action of request b, scanned as f, when its
// response carries messages (one of the Action constants), else "".
func MessageAction(b []byte, f Frame) string {
	for _, a := range []string{ActionGetMsg, ActionGetForwardMsg, ActionGroupMsgHistory, ActionFriendMsgHistory} {
		if Is(b, f.Action, a) {
			return a
		}
	}
	return ""
}

// ConvertResponse returns a copy of response b, scanned as f, of a call to
// action with the messages in its data written in format to: data.message
// (and data.message_format) for get_msg; for get_forward_msg and the
// histories the message of each element of data.messages, as "message"
// (NapCat, Lagrange) or "content" (go-cqhttp's forward nodes). Segments
// nested in a message (a forward segment's content) are left as they are.
// It returns nil when there is nothing to convert.
func ConvertResponse(b []byte, f Frame, action string, to MessageFormat) ([]byte, error) {
	if to == FormatAsIs || !f.Data.Valid() || b[f.Data.Start] != '{' {
		return nil, nil
	}
	var eds []edit
	switch action {
	case ActionGetMsg:
		eds = objectEdits(eds, b, f.Data, to)
	case ActionGetForwardMsg, ActionGroupMsgHistory, ActionFriendMsgHistory:
		var list Span
		members(b, f.Data, func(key []byte, val Span) {
			if keyIs(key, "messages") && b[val.Start] == '[' {
				list = val
			}
		})
		if list.Valid() {
			elements(b, list, func(node Span) error {
				if b[node.Start] == '{' {
					eds = objectEdits(eds, b, node, to)
				}
				return nil
			})
		}
	}
	return apply(b, eds, to)
}

// objectEdits appends the edits of the message in the object at s of b:
// its "message" (or, without one, "content") and "message_format".
func objectEdits(eds []edit, b []byte, s Span, to MessageFormat) []edit {
	var msg, content, mf Span
	members(b, s, func(key []byte, val Span) {
		switch {
		case keyIs(key, "message"):
			msg = val
		case keyIs(key, "content"):
			content = val
		case keyIs(key, "message_format"):
			mf = val
		}
	})
	if !msg.Valid() {
		msg = content
	}
	return messageEdits(eds, b, msg, mf, to)
}

// members calls fn with every member of the object at s of b, value spans
// in b's offsets.
func members(b []byte, s Span, fn func(key []byte, val Span)) {
	Members(b[s.Start:s.End], func(key []byte, _, val Span) error {
		fn(key, Span{s.Start + val.Start, s.Start + val.End})
		return nil
	})
}
