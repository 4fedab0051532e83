package interop

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestZeroBotMessageFormats: two ZeroBot targets of one obmux, one with
// MESSAGE_FORMAT=string and one with array, get one array message from the
// upstream; ZeroBot's own CQ-code parser (message.ParseMessageFromString,
// its UnescapeCQText and UnescapeCQCodeText) reads the string obmux made
// into the same segments its array parser reads from the array: text with
// & [ ] and , in it, an at and an image whose URL holds & and , survive the
// escaping, and the image's numeric sub_type arrives as the string "0".
func TestZeroBotMessageFormats(t *testing.T) {
	ctx := ctxWait(t)
	up := startUpstream(t)
	str, arr := startZeroBotServer(t, "strbot"), startZeroBotServer(t, "arrbot")
	startObmux(t, "OBMUX_UPSTREAM_URL="+up.URL,
		"OBMUX_TARGET_STR_URL=ws://"+str.addr+"/", "OBMUX_TARGET_STR_MESSAGE_FORMAT=string",
		"OBMUX_TARGET_ARR_URL=ws://"+arr.addr+"/", "OBMUX_TARGET_ARR_MESSAGE_FORMAT=array")
	ws := up.conn(ctx)
	str.waitConnected(t)
	arr.waitConnected(t)

	const message = `[{"type":"text","data":{"text":"看 a[b]&c,d &amp; "}},{"type":"at","data":{"qq":"20003"}},` +
		`{"type":"text","data":{"text":"x"}},{"type":"image","data":{"file":"a,b.png","url":"https://h.example/d?a=1&b=2,3","sub_type":0}}]`
	ev := fmt.Sprintf(`{"self_id":%d,"user_id":20002,"time":%d,"message_id":801,"message_type":"private","sub_type":"friend",`+
		`"sender":{"user_id":20002,"nickname":"alice"},"raw_message":"?","font":14,"message":%s,"message_format":"array","post_type":"message"}`,
		selfID, time.Now().Unix(), message)
	if err := ws.Write(ctx, websocket.MessageText, []byte(ev)); err != nil {
		t.Fatal(err)
	}
	want := []any{
		map[string]any{"type": "text", "data": map[string]any{"text": "看 a[b]&c,d &amp; "}},
		map[string]any{"type": "at", "data": map[string]any{"qq": "20003"}},
		map[string]any{"type": "text", "data": map[string]any{"text": "x"}},
		map[string]any{"type": "image", "data": map[string]any{"file": "a,b.png", "url": "https://h.example/d?a=1&b=2,3", "sub_type": "0"}},
	}
	for _, c := range []struct {
		z        *zeroBot
		cqString bool
	}{{str, true}, {arr, false}} {
		all := c.z.waitReplies(t, 1)
		got := reports(all, "event")[0]
		if got["cq_string"] != c.cqString {
			t.Errorf("%s: the message came as a CQ string: %v, want %v", c.z.name, got["cq_string"], c.cqString)
		}
		if !reflect.DeepEqual(got["segments"], want) {
			b, _ := json.Marshal(got["segments"])
			t.Errorf("%s: ZeroBot parsed\n%s\nwant the upstream's segments (values as strings)", c.z.name, b)
		}
	}
}
