// Command zerobot-target is a ZeroBot bot used by the interop tests: it runs
// ZeroBot's own drivers (driver.NewWebSocketServer for reverse WS, where obmux
// dials it, or driver.NewWebSocketClient for forward WS, where it dials
// obmux) with one matcher that answers every message with send_private_msg,
// and reports on stdout, one JSON object a line, what ZeroBot did:
//
//	{"kind":"listen","addr":"127.0.0.1:40123"}           reverse WS: ZeroBot listens
//	{"kind":"connected","self_id":10001,"registered":true} ZeroBot took the self_id from the first frame
//	{"kind":"event","self_id":..,"user_id":..,"message_id":..,"text":"..","segments":[..],"cq_string":false}
//	{"kind":"api_response","payload":{...}}              every API response frame ZeroBot read
//	{"kind":"reply","user_id":..,"text":"..","message_id":..} send_private_msg returned
//
// Everything is taken from ZeroBot itself: its log lines (through a logrus
// hook, at debug level) and its matcher; nothing here speaks WebSocket.
//
// Why a separate process and not a goroutine of the test: ZeroBot keeps its
// state in package globals (zero.APICallers keyed by self_id, the matcher
// list, zero.BotConfig, the once-only flag of zero.Run), and its drivers
// cannot be stopped (WSServer serves forever on a listener it keeps to
// itself, WSClient redials forever). Two instances in one process would share
// one matcher list and one APICallers entry for the same self_id, and nothing
// could be torn down between tests. Users run each bot as its own process; so
// do the tests, which end it with SIGTERM.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"github.com/sirupsen/logrus"
	zero "github.com/wdvxdr1123/ZeroBot"
	"github.com/wdvxdr1123/ZeroBot/driver"
)

var (
	outMu sync.Mutex
	enc   = json.NewEncoder(os.Stdout)
)

// emit writes one report line.
func emit(v map[string]any) {
	outMu.Lock()
	defer outMu.Unlock()
	_ = enc.Encode(v)
}

// hook turns ZeroBot's log lines into reports. The texts are those of
// ZeroBot v1.8.2's driver package.
type hook struct{}

func (hook) Levels() []logrus.Level { return logrus.AllLevels }

func (hook) Fire(e *logrus.Entry) error {
	msg := e.Message
	switch {
	case strings.HasPrefix(msg, "[wss] Websocket服务器开始监听:"):
		_, addr, _ := strings.Cut(msg, ":")
		emit(map[string]any{"kind": "listen", "addr": strings.TrimSpace(addr)})
	case strings.Contains(msg, "连接Websocket服务器") && strings.Contains(msg, "成功, 账号:"):
		_, id, _ := strings.Cut(msg, "账号:")
		selfID, err := strconv.ParseInt(strings.TrimSpace(id), 10, 64)
		if err != nil {
			emit(map[string]any{"kind": "error", "error": "cannot parse self_id from log line: " + msg})
			return nil
		}
		// ZeroBot stores the caller under that self_id before it logs.
		_, registered := zero.APICallers.Load(selfID)
		emit(map[string]any{"kind": "connected", "self_id": selfID, "registered": registered})
	case strings.Contains(msg, "接收到API调用返回:"):
		_, payload, _ := strings.Cut(msg, "接收到API调用返回:")
		emit(map[string]any{"kind": "api_response", "payload": json.RawMessage(strings.TrimSpace(payload))})
	}
	return nil
}

func main() {
	name := flag.String("name", "zerobot", "the bot's name; it prefixes every reply")
	mode := flag.String("mode", "server", "server: reverse WS (driver.NewWebSocketServer); client: forward WS (driver.NewWebSocketClient)")
	listen := flag.String("listen", "ws://127.0.0.1:0", "server mode: the address ZeroBot listens on")
	url := flag.String("url", "", "client mode: the forward-WS URL ZeroBot dials")
	token := flag.String("token", "", "access token")
	flag.Parse()

	logrus.SetOutput(os.Stderr)
	logrus.SetLevel(logrus.DebugLevel)
	logrus.AddHook(hook{})

	var drv zero.Driver
	switch *mode {
	case "server":
		drv = driver.NewWebSocketServer(16, *listen, *token)
	case "client":
		drv = driver.NewWebSocketClient(*url, *token)
	default:
		fmt.Fprintln(os.Stderr, "zerobot-target: unknown -mode", *mode)
		os.Exit(2)
	}

	zero.OnMessage().Handle(func(ctx *zero.Ctx) {
		ev := ctx.Event
		emit(map[string]any{"kind": "event", "self_id": ev.SelfID, "user_id": ev.UserID,
			"message_id": ev.MessageID, "text": ev.RawMessage,
			// ZeroBot's own parse of the message, and whether the frame
			// carried it as a CQ-code string or an array of segments.
			"segments": ev.Message, "cq_string": len(ev.NativeMessage) > 0 && ev.NativeMessage[0] == '"'})
		reply := *name + ": " + ev.RawMessage
		id := ctx.SendPrivateMessage(ev.UserID, reply)
		emit(map[string]any{"kind": "reply", "user_id": ev.UserID, "text": reply, "message_id": id})
	})

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sig
		os.Exit(0)
	}()
	zero.RunAndBlock(&zero.Config{NickName: []string{*name}, CommandPrefix: "/", Driver: []zero.Driver{drv}}, nil)
}
