package interop

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// ZeroBot v1.8.2 (github.com/wdvxdr1123/ZeroBot), run as cmd/zerobot-target.

// zeroBot is one ZeroBot process.
type zeroBot struct {
	*proc
	name string
	addr string // server mode: where ZeroBot listens
}

// startZeroBotServer runs ZeroBot with its reverse-WS driver
// (driver.NewWebSocketServer) on a free port and waits until it listens.
func startZeroBotServer(t *testing.T, name string) *zeroBot {
	t.Helper()
	z := &zeroBot{name: name, proc: startProc(t, "zerobot "+name, baseEnv(), bin.zerobot,
		"-name", name, "-mode", "server", "-listen", "ws://127.0.0.1:0")}
	all := z.stdout.waitFor(t, "ZeroBot "+name+" to listen", wait, func(all []string) bool {
		return len(reports(all, "listen")) > 0
	})
	z.addr = reports(all, "listen")[0].str("addr")
	return z
}

// startZeroBotClient runs ZeroBot with its forward-WS driver
// (driver.NewWebSocketClient) dialing url.
func startZeroBotClient(t *testing.T, name, url string) *zeroBot {
	t.Helper()
	return &zeroBot{name: name, proc: startProc(t, "zerobot "+name, baseEnv(), bin.zerobot,
		"-name", name, "-mode", "client", "-url", url)}
}

// waitConnected waits until ZeroBot has taken obmux's first frame as its
// handshake and registered the bot under the self_id it carries.
func (z *zeroBot) waitConnected(t *testing.T) {
	t.Helper()
	all := z.stdout.waitFor(t, "ZeroBot "+z.name+" to connect", wait, func(all []string) bool {
		return len(reports(all, "connected")) > 0
	})
	c := reports(all, "connected")[0]
	if c.int("self_id") != selfID || c.str("registered") != "true" {
		t.Fatalf("ZeroBot %s: connected %v, want self_id %d registered in zero.APICallers", z.name, c, selfID)
	}
}

// waitReplies waits until ZeroBot has had n send_private_msg calls return.
func (z *zeroBot) waitReplies(t *testing.T, n int) []string {
	t.Helper()
	return z.stdout.waitFor(t, fmt.Sprintf("ZeroBot %s to reply %d times", z.name, n), wait, func(all []string) bool {
		return len(reports(all, "reply")) >= n
	})
}

// responseOf decodes an api_response report's payload.
func responseOf(t *testing.T, r report) (echo string, messageID int64) {
	t.Helper()
	var p struct {
		Status string          `json:"status"`
		Echo   json.RawMessage `json:"echo"`
		Data   struct {
			MessageID int64 `json:"message_id"`
		} `json:"data"`
	}
	raw, _ := json.Marshal(r["payload"])
	if err := json.Unmarshal(raw, &p); err != nil || p.Status != "ok" {
		t.Fatalf("ZeroBot read an unexpected API response: %s", raw)
	}
	return string(p.Echo), p.Data.MessageID
}

// TestZeroBotReverseWS: obmux dials ZeroBot's reverse-WS server; ZeroBot
// takes the self_id from obmux's first frame (lifecycle connect), gets a
// private message from the upstream, answers with send_private_msg, the
// upstream sees the call and ZeroBot gets the upstream's answer through obmux.
func TestZeroBotReverseWS(t *testing.T) {
	ctx := ctxWait(t)
	up := startUpstream(t)
	zb := startZeroBotServer(t, "alpha")
	ob := startObmux(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_ALPHA_URL=ws://"+zb.addr+"/onebot/v11/ws")
	ws := up.conn(ctx)
	zb.waitConnected(t)

	up.privateMessage(ctx, ws, 20002, 501, "hello obmux")
	call := up.nextCall(ctx)
	if call.Action != "send_private_msg" || call.str("user_id") != "20002" || call.str("message") != "alpha: hello obmux" {
		t.Fatalf("upstream got %+v, want send_private_msg to 20002 with %q", call, "alpha: hello obmux")
	}
	all := zb.waitReplies(t, 1)

	ev := reports(all, "event")[0]
	if ev.int("self_id") != selfID || ev.int("user_id") != 20002 || ev.int("message_id") != 501 || ev.str("text") != "hello obmux" {
		t.Errorf("ZeroBot's event: %v", ev)
	}
	checkOneReply(t, all, call.MessageID)
	if string(call.Echo) == "1" {
		t.Errorf("the upstream saw ZeroBot's own echo 1; obmux should send its own")
	}
	if v, _ := ob.metric("obmux_api_requests_total", "name=alpha", "outcome=ok"); v != 1 {
		t.Errorf("obmux_api_requests_total{name=alpha,outcome=ok} = %v, want 1", v)
	}

	// Shutdown: ZeroBot reads lifecycle disable (it hands it to its handler
	// as an event, logged at debug level), then sees the connection end.
	if err := ob.stop(t); err != nil {
		t.Errorf("obmux exited with %v", err)
	}
	zb.stderr.waitFor(t, "ZeroBot to read lifecycle disable and lose the connection", wait, func(all []string) bool {
		disable := -1
		for i, l := range all {
			if strings.Contains(l, "接收到事件") && strings.Contains(l, `\"meta_event_type\":\"lifecycle\"`) &&
				strings.Contains(l, `\"sub_type\":\"disable\"`) {
				disable = i
			}
			if disable >= 0 && strings.Contains(l, "Websocket服务器连接断开") {
				return true
			}
		}
		return false
	})
}

// TestZeroBotTwoTargets: two ZeroBot processes are two targets of one obmux.
// Both answer every message, both number their calls 1, 2, 3, and each gets
// exactly the upstream's answers to its own calls.
func TestZeroBotTwoTargets(t *testing.T) {
	ctx := ctxWait(t)
	up := startUpstream(t)
	bots := []*zeroBot{startZeroBotServer(t, "alpha"), startZeroBotServer(t, "beta")}
	ob := startObmux(t, "OBMUX_UPSTREAM_URL="+up.URL,
		"OBMUX_TARGET_ALPHA_URL=ws://"+bots[0].addr+"/", "OBMUX_TARGET_BETA_URL=ws://"+bots[1].addr+"/")
	ws := up.conn(ctx)
	for _, z := range bots {
		z.waitConnected(t)
	}

	const rounds = 3
	idOf := map[string]int64{} // reply text -> message_id the upstream answered
	echoes := map[string]bool{}
	for i := range rounds {
		text := fmt.Sprintf("message %d", i)
		up.privateMessage(ctx, ws, 20002, int64(600+i), text)
		for range bots {
			c := up.nextCall(ctx)
			if c.Action != "send_private_msg" {
				t.Fatalf("upstream got %+v", c)
			}
			idOf[c.str("message")] = c.MessageID
			if echoes[string(c.Echo)] {
				t.Errorf("obmux sent the upstream echo %s twice", c.Echo)
			}
			echoes[string(c.Echo)] = true
		}
	}
	for _, z := range bots {
		for i := range rounds {
			if _, ok := idOf[fmt.Sprintf("%s: message %d", z.name, i)]; !ok {
				t.Fatalf("the upstream got no reply from %s to message %d; calls: %v", z.name, i, idOf)
			}
		}
	}

	for _, z := range bots {
		all := z.waitReplies(t, rounds)
		for _, r := range reports(all, "reply") {
			if !strings.HasPrefix(r.str("text"), z.name+": ") {
				t.Errorf("%s replied %q", z.name, r.str("text"))
			}
			if want := idOf[r.str("text")]; r.int("message_id") != want {
				t.Errorf("%s: %q returned message_id %d, the upstream answered that call with %d",
					z.name, r.str("text"), r.int("message_id"), want)
			}
		}
		// Exactly its own answers, each once, under its own echoes 1..rounds.
		mine := map[int64]bool{}
		for text, id := range idOf {
			if strings.HasPrefix(text, z.name+": ") {
				mine[id] = true
			}
		}
		resps := reports(all, "api_response")
		if len(resps) != rounds {
			t.Errorf("%s read %d API responses, want %d: %v", z.name, len(resps), rounds, resps)
		}
		seen := map[string]bool{}
		for _, r := range resps {
			echo, id := responseOf(t, r)
			if !mine[id] {
				t.Errorf("%s got the answer with message_id %d, which is not for one of its calls", z.name, id)
			}
			if seen[echo] {
				t.Errorf("%s got echo %s twice", z.name, echo)
			}
			seen[echo] = true
		}
		for i := 1; i <= rounds; i++ {
			if !seen[fmt.Sprint(i)] {
				t.Errorf("%s got no answer with its echo %d", z.name, i)
			}
		}
		if v, _ := ob.metric("obmux_api_requests_total", "name="+z.name, "outcome=ok"); v != rounds {
			t.Errorf("obmux_api_requests_total{name=%s,outcome=ok} = %v, want %d", z.name, v, rounds)
		}
	}
}

// TestZeroBotForwardWS: ZeroBot's forward-WS client on obmux's forward
// server "/": it gets lifecycle connect first, events, and the answers to its
// calls.
func TestZeroBotForwardWS(t *testing.T) {
	ctx := ctxWait(t)
	up := startUpstream(t)
	ob := startObmux(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_FORWARD_LISTEN=127.0.0.1:0")
	ws := up.conn(ctx)
	// Until the upstream is there the forward server answers 503, and ZeroBot
	// would retry only 2 s later.
	ob.waitReady()
	zb := startZeroBotClient(t, "gamma", "ws://"+ob.forward+"/")
	zb.waitConnected(t)
	ob.waitMetric("the client to count as connected", wait, func(v float64) bool { return v == 1 },
		"obmux_connection_up", "role=client", "name=/")

	up.privateMessage(ctx, ws, 30003, 701, "hi from forward")
	call := up.nextCall(ctx)
	if call.Action != "send_private_msg" || call.str("user_id") != "30003" || call.str("message") != "gamma: hi from forward" {
		t.Fatalf("upstream got %+v", call)
	}
	all := zb.waitReplies(t, 1)
	checkOneReply(t, all, call.MessageID)
	if v, _ := ob.metric("obmux_api_requests_total", "name=/", "outcome=ok"); v != 1 {
		t.Errorf("obmux_api_requests_total{name=/,outcome=ok} = %v, want 1", v)
	}
}

// checkOneReply checks that ZeroBot made one call, that its send returned
// the upstream's message_id, and that the one response it read carried its
// own echo 1 back (ZeroBot numbers its calls from 1; obmux sent the upstream
// its own echo and restored ZeroBot's).
func checkOneReply(t *testing.T, all []string, messageID int64) {
	t.Helper()
	if got := reports(all, "reply")[0].int("message_id"); got != messageID {
		t.Errorf("ZeroBot's send_private_msg returned message_id %d, the upstream answered %d", got, messageID)
	}
	resps := reports(all, "api_response")
	if len(resps) != 1 {
		t.Fatalf("ZeroBot read %d API responses, want 1: %v", len(resps), resps)
	}
	if echo, id := responseOf(t, resps[0]); echo != "1" || id != messageID {
		t.Errorf("ZeroBot's response: echo %s message_id %d, want echo 1 message_id %d", echo, id, messageID)
	}
}
