package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/obmux/obmux/internal/sim"
)

// formatEvent is a group message from group with its message in NapCat's
// array or string form (raw_message is the CQ form either way).
func formatEvent(n int, group int64, asString bool) []byte {
	msg, mf := `[{"type":"at","data":{"qq":"10001"}},{"type":"text","data":{"text":" 集合见群公告[置顶]，带水&零食"}}]`, "array"
	if asString {
		msg, mf = `"[CQ:at,qq=10001] 集合见群公告&#91;置顶&#93;，带水&amp;零食"`, "string"
	}
	return fmt.Appendf(nil, `{"self_id":%d,"user_id":20002,"time":1790000101,"message_id":%d,"message_type":"group",`+
		`"sender":{"user_id":20002,"nickname":"阿杰","role":"owner"},"raw_message":"[CQ:at,qq=10001] 集合见群公告&#91;置顶&#93;，带水&amp;零食",`+
		`"font":14,"sub_type":"normal","message":%s,"message_format":"%s","post_type":"message","group_id":%d}`, testSelfID, n, msg, mf, group)
}

const (
	cqText    = "[CQ:at,qq=10001] 集合见群公告&#91;置顶&#93;，带水&amp;零食"
	arrayText = `[{"type":"at","data":{"qq":"10001"}},{"type":"text","data":{"text":" 集合见群公告[置顶]，带水&零食"}}]`
)

type formatted struct {
	MessageID     int             `json:"message_id"`
	Message       json.RawMessage `json:"message"`
	MessageFormat string          `json:"message_format"`
	RawMessage    string          `json:"raw_message"`
}

// checkFormat checks that frame b is event n with its message in format f.
func checkFormat(t *testing.T, who string, b []byte, n int, f string) {
	t.Helper()
	var got formatted
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatalf("%s: %s: %v", who, b, err)
	}
	if got.MessageID != n || got.MessageFormat != f || got.RawMessage != cqText {
		t.Fatalf("%s: got message %d in %q (raw_message %q), want %d in %s: %s", who, got.MessageID, got.MessageFormat, got.RawMessage, n, f, b)
	}
	var want any = cqText
	if f == "array" {
		json.Unmarshal([]byte(arrayText), &want)
	}
	var msg any
	json.Unmarshal(got.Message, &msg)
	if !reflect.DeepEqual(msg, want) {
		t.Fatalf("%s: message %s, want %v", who, got.Message, want)
	}
}

// Two bots with different formats and groups, and a forward client, on one
// upstream that sends arrays and strings: each gets each of its events in
// its own format (the one already in it byte for byte), live and replayed,
// and get_msg and get_forward_msg answered in the caller's format.
func TestMessageFormatPerBot(t *testing.T) {
	up := newUpstream(t, "127.0.0.1:0")
	up.custom = func(p *sim.Peer, req []byte) bool {
		var r sim.Request
		json.Unmarshal(req, &r)
		var data string
		switch r.Action {
		case "get_msg":
			data = `{"message_id":7,"message":` + arrayText + `,"raw_message":"` + cqText + `","message_format":"array"}`
		case "get_forward_msg":
			data = `{"messages":[{"message":` + arrayText + `,"message_format":"array"},{"message":"[CQ:face,id=1]","message_format":"string"}]}`
		default:
			return false
		}
		p.Send(context.Background(), sim.Response(`"ok"`, 0, data, r.Echo))
		return true
	}
	arr, str := newTarget(t), newTarget(t)
	var gs gate
	str.Check = gs.check
	in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_HEARTBEAT_INTERVAL=0", "OBMUX_FORWARD_LISTEN=127.0.0.1:0",
		"OBMUX_TARGET_ARR_URL="+arr.URL, "OBMUX_TARGET_ARR_MESSAGE_FORMAT=array", "OBMUX_TARGET_ARR_GROUPS=111",
		"OBMUX_TARGET_STR_URL="+str.URL, "OBMUX_TARGET_STR_MESSAGE_FORMAT=string", "OBMUX_TARGET_STR_GROUPS=111,222",
		"OBMUX_FORWARD_MESSAGE_FORMAT=string")
	up.connected()
	pa, ps := arr.accept(), str.accept()
	fwd := dialForward(t, in, "/", http.Header{})

	sent := [][]byte{formatEvent(1, 111, false), formatEvent(2, 222, true), formatEvent(3, 111, true)}
	for _, b := range sent {
		up.send(b)
	}
	if got := next(t, pa); string(got) != string(sent[0]) {
		t.Fatalf("array bot, array event: not passed byte for byte:\n%s\n%s", got, sent[0])
	}
	checkFormat(t, "array bot", next(t, pa), 3, "array") // 2 is not in its groups
	checkFormat(t, "string bot", next(t, ps), 1, "string")
	for _, n := range []int{2, 3} {
		if got := next(t, ps); string(got) != string(sent[n-1]) {
			t.Fatalf("string bot, string event %d: not passed byte for byte:\n%s", n, got)
		}
	}
	for n := 1; n <= 3; n++ {
		checkFormat(t, "forward client", fwd.next(), n, "string")
	}

	// get_msg and get_forward_msg: each caller gets its format.
	for _, c := range []struct {
		p    *sim.Peer
		want string
	}{{pa, "array"}, {ps, "string"}, {fwd.p, "string"}} {
		c.p.Send(ctxT(t), []byte(`{"action":"get_msg","params":{"message_id":7},"echo":{"seq":1}}`))
		var r struct {
			Data formatted
			Echo json.RawMessage
		}
		b := nextEvent(t, c.p)
		if err := json.Unmarshal(b, &r); err != nil || string(r.Echo) != `{"seq":1}` {
			t.Fatalf("get_msg: %s %v", b, err)
		}
		checkFormat(t, "get_msg for "+c.want, mustMarshal(t, r.Data), 7, c.want)

		c.p.Send(ctxT(t), []byte(`{"action":"get_forward_msg","params":{"id":"x"},"echo":2}`))
		var fr struct {
			Data struct{ Messages []formatted }
		}
		b = nextEvent(t, c.p)
		if err := json.Unmarshal(b, &fr); err != nil || len(fr.Data.Messages) != 2 {
			t.Fatalf("get_forward_msg: %s %v", b, err)
		}
		for i, m := range fr.Data.Messages {
			if m.MessageFormat != c.want || (c.want == "string") != strings.HasPrefix(string(m.Message), `"`) {
				t.Errorf("get_forward_msg for %s: node %d is %s %s", c.want, i, m.MessageFormat, m.Message)
			}
		}
	}

	// A message CQ code cannot express: the string bot gets it as it is,
	// counted; the array bot does not notice.
	bad := fmt.Appendf(nil, `{"self_id":%d,"post_type":"message","message_type":"group","group_id":111,"user_id":20002,"message_id":9,`+
		`"message":[{"type":"odd type","data":{}}],"raw_message":"?","message_format":"array"}`, testSelfID)
	up.send(bad)
	if got := next(t, ps); string(got) != string(bad) {
		t.Fatalf("string bot, inexpressible message: %s", got)
	}
	if got := next(t, pa); string(got) != string(bad) {
		t.Fatalf("array bot, inexpressible message: %s", got)
	}
	eventually(t, "the unconverted message counted", func() bool {
		return in.metric("obmux_unconverted_messages_total", "name=str") == 1 && in.metric("obmux_unconverted_messages_total", "name=arr") == 0
	})
	if n := strings.Count(in.log.String(), "cannot be converted"); n != 1 {
		t.Errorf("logged %d times, want once", n)
	}

	// Replay: the string bot, away for two events, is replayed them in
	// its format too.
	gs.closed.Store(true)
	ps.Close()
	eventually(t, "the string bot down", func() bool { return in.metric("obmux_connection_up", "role=target", "name=str") == 0 })
	missed := [][]byte{formatEvent(10, 111, false), formatEvent(11, 222, true)}
	for _, b := range missed {
		up.send(b)
	}
	gs.closed.Store(false)
	ps = str.accept()
	checkFormat(t, "string bot, replayed", next(t, ps), 10, "string")
	if got := next(t, ps); string(got) != string(missed[1]) {
		t.Fatalf("string bot, replayed string event: not passed byte for byte:\n%s", got)
	}
}

func mustMarshal(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
