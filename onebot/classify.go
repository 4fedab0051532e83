package onebot

// Classify scans b and says what kind of OneBot frame it is: an event (with
// heartbeat and lifecycle meta events told apart), an API request (it has
// "action") or an API response (it has "echo", "retcode" or "status" and no
// "post_type"). Anything else, and anything Scan rejects, is KindInvalid.
func Classify(b []byte) (Frame, Kind, error) {
	f, err := Scan(b)
	if err != nil {
		return f, KindInvalid, err
	}
	switch {
	case f.PostType.Valid():
		if Is(b, f.PostType, "meta_event") {
			switch {
			case Is(b, f.MetaEventType, "heartbeat"):
				return f, KindHeartbeat, nil
			case Is(b, f.MetaEventType, "lifecycle"):
				return f, KindLifecycle, nil
			}
		}
		return f, KindEvent, nil
	case f.Action.Valid():
		return f, KindAPIRequest, nil
	case f.Echo.Valid() || f.Retcode.Valid() || f.Status.Valid():
		return f, KindAPIResponse, nil
	}
	return f, KindInvalid, errNoKind
}

var errNoKind = errorString("neither an event (post_type), an API request (action) nor a response (echo)")

type errorString string

func (e errorString) Error() string { return string(e) }

// SetEcho returns a copy of frame b (scanned as f) whose "echo" member is
// echo, given as raw JSON. A nil echo removes the member; a frame without one
// gets it added as its first member. b is not modified.
func SetEcho(b []byte, f Frame, echo []byte) []byte {
	if f.Echo.Valid() {
		if echo == nil {
			return removeMember(b, f.EchoMember)
		}
		out := make([]byte, 0, len(b)-(f.Echo.End-f.Echo.Start)+len(echo))
		out = append(out, b[:f.Echo.Start]...)
		out = append(out, echo...)
		return append(out, b[f.Echo.End:]...)
	}
	if echo == nil {
		return b
	}
	open := skipWS(b, 0) + 1 // Scan has checked that b[open-1] is '{'
	out := make([]byte, 0, len(b)+len(echo)+9)
	out = append(out, b[:open]...)
	out = append(out, `"echo":`...)
	out = append(out, echo...)
	if rest := skipWS(b, open); b[rest] != '}' {
		out = append(out, ',')
	}
	return append(out, b[open:]...)
}

// removeMember cuts member m and one comma next to it out of a copy of b.
func removeMember(b []byte, m Span) []byte {
	start, end := m.Start, m.End
	if j := skipWS(b, end); j < len(b) && b[j] == ',' {
		end = skipWS(b, j+1)
	} else {
		k := start - 1
		for k >= 0 && (b[k] == ' ' || b[k] == '\t' || b[k] == '\n' || b[k] == '\r') {
			k--
		}
		if k >= 0 && b[k] == ',' {
			start = k
		}
	}
	out := make([]byte, 0, len(b)-(end-start))
	out = append(out, b[:start]...)
	return append(out, b[end:]...)
}
