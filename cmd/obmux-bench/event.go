package main

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/obmux/obmux/onebot"
)

// The events are NapCat-shaped group messages. The sequence number (in
// message_id) and the send time (unix nanoseconds, in bench_ts) are written
// into fixed-width slots padded with spaces (whitespace is valid JSON between
// tokens), so the upstream patches one buffer in place per event and a target
// finds both near the start of the frame without decoding it.

const (
	selfID   = 10001
	seqWidth = 12 // digits of a sequence number at most
	tsWidth  = 19 // digits of unix nanoseconds until 2286
	seqKey   = `"message_id":`
	tsKey    = `"bench_ts":`
	// headerLen covers the slots: a target reads this much of a frame
	// into its own buffer and skims the rest.
	headerLen = 256
	// eventGroup is the group_id of every bench event.
	eventGroup = 3003
)

// event is one reusable event frame of a fixed size.
type event struct {
	buf         []byte
	seqAt, tsAt int
}

// minEventSize is the size of an event with no filler.
var minEventSize = len(buildEvent(0, false))

// newEvent returns an event of exactly size bytes (at least minEventSize).
// Events of 2 KiB and more carry their filler as a base64 image segment,
// smaller ones as text.
func newEvent(size int) (*event, error) {
	if size < minEventSize {
		return nil, fmt.Errorf("event size %d is below the minimum of %d bytes", size, minEventSize)
	}
	image := size >= 2048
	base := len(buildEvent(0, image))
	pad := size - base
	if !image {
		pad = (size - base) / 2 // the text appears twice (message and raw_message)
	}
	b := buildEvent(pad, image)
	for len(b) < size { // an odd remainder: one space before the closing brace
		b = append(b[:len(b)-1], ' ', '}')
	}
	if len(b) != size {
		return nil, fmt.Errorf("built an event of %d bytes, want %d", len(b), size)
	}
	e := &event{buf: b, seqAt: bytes.Index(b, []byte(seqKey)) + len(seqKey), tsAt: bytes.Index(b, []byte(tsKey)) + len(tsKey)}
	return e, nil
}

func buildEvent(pad int, image bool) []byte {
	text := "hi" + strings.Repeat("x", pad)
	message := `[{"type":"text","data":{"text":"` + text + `"}}]`
	raw := text
	if image {
		text = "看图"
		message = `[{"type":"text","data":{"text":"` + text + `"}},{"type":"image","data":{"file":"base64://` + strings.Repeat("A", pad) + `"}}]`
		raw = text + `[CQ:image,file=a.png]`
	}
	return []byte(`{"self_id":` + strconv.Itoa(selfID) + `,"user_id":2002,"time":1700000000,` +
		seqKey + strings.Repeat("0", seqWidth) + `,` + tsKey + strings.Repeat("0", tsWidth) +
		`,"message_type":"group","sub_type":"normal","group_id":` + strconv.Itoa(eventGroup) + `,"message":` + message + `,"raw_message":"` + raw +
		`","sender":{"user_id":2002,"nickname":"bob"},"post_type":"message"}`)
}

// stamp writes seq and the send time ns into the event's slots.
func (e *event) stamp(seq uint64, ns int64) {
	var tmp [20]byte
	putSlot(e.buf[e.seqAt:e.seqAt+seqWidth], strconv.AppendUint(tmp[:0], seq, 10))
	putSlot(e.buf[e.tsAt:e.tsAt+tsWidth], strconv.AppendInt(tmp[:0], ns, 10))
}

func putSlot(dst, digits []byte) {
	n := copy(dst, digits)
	for i := n; i < len(dst); i++ {
		dst[i] = ' '
	}
}

// parseHeader finds the sequence number and send time in the first bytes of
// a frame; ok is false when the frame is not a bench event.
func parseHeader(h []byte) (seq uint64, ts int64, ok bool) {
	i := bytes.Index(h, []byte(seqKey))
	if i < 0 {
		return 0, 0, false
	}
	seq, rest, ok1 := leadingUint(h[i+len(seqKey):])
	j := bytes.Index(rest, []byte(tsKey))
	if !ok1 || j < 0 {
		return 0, 0, false
	}
	t, _, ok2 := leadingUint(rest[j+len(tsKey):])
	return seq, int64(t), ok2
}

func leadingUint(b []byte) (uint64, []byte, bool) {
	var n uint64
	i := 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		n = n*10 + uint64(b[i]-'0')
		i++
	}
	return n, b[i:], i > 0
}

// stringEventSize returns the size of an event of size bytes with its
// message as a CQ-code string (MESSAGE_FORMAT=string).
func stringEventSize(size int) (int, error) {
	e, err := newEvent(size)
	if err != nil {
		return 0, err
	}
	// Stamped as sent: the unstamped slots are zeros, which JSON (and so
	// onebot.MessageSpans) refuses as numbers with leading zeros.
	e.stamp(1, 1)
	msg, mf, err := onebot.MessageSpans(e.buf)
	if err != nil {
		return 0, fmt.Errorf("the bench event is not a JSON object: %w", err)
	}
	out, err := onebot.ConvertEvent(e.buf, msg, mf, onebot.FormatString)
	if err != nil || out == nil {
		return 0, fmt.Errorf("the bench event does not convert to a string message: %v", err)
	}
	return len(out), nil
}
