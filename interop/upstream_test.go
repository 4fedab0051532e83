package interop

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// selfID is the QQ number of the test upstream's account.
const selfID = 10001

// apiCall is one API request the test upstream read, with the message_id it
// answered (send_* actions only).
type apiCall struct {
	Action    string
	Params    map[string]any
	Echo      json.RawMessage
	MessageID int64
}

// upstream is a OneBot v11 implementation's forward-WS server (what NapCat's
// websocketServers entry is), for obmux to dial: it sends lifecycle connect
// on a new connection, answers get_login_info, and answers every send_* call
// with a message_id unique in the test, recording each call on Calls.
type upstream struct {
	t     *testing.T
	URL   string
	Calls chan apiCall

	ln     net.Listener
	srv    *http.Server
	nextID atomic.Int64

	mu       sync.Mutex
	closed   bool
	conns    []*websocket.Conn
	cur      chan *websocket.Conn // receives each accepted connection
	wg       sync.WaitGroup       // Serve
	handlers sync.WaitGroup       // accept, which serves a connection till its end
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{t: t, URL: "ws://" + ln.Addr().String() + "/", Calls: make(chan apiCall, 256), ln: ln,
		cur: make(chan *websocket.Conn, 16)}
	u.nextID.Store(7000)
	u.srv = &http.Server{Handler: http.HandlerFunc(u.accept), ReadHeaderTimeout: 10 * time.Second}
	u.wg.Go(func() { u.srv.Serve(ln) })
	t.Cleanup(u.close)
	return u
}

func (u *upstream) accept(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	if u.closed {
		u.mu.Unlock()
		http.Error(w, "closing", http.StatusServiceUnavailable)
		return
	}
	u.handlers.Add(1)
	u.mu.Unlock()
	defer u.handlers.Done()
	ws, err := websocket.Accept(w, r, nil)
	if err != nil {
		return
	}
	ws.SetReadLimit(16 << 20)
	u.mu.Lock()
	u.conns = append(u.conns, ws)
	closed := u.closed
	u.mu.Unlock()
	if closed {
		ws.CloseNow()
		return
	}
	ctx := context.Background()
	// NapCat greets every connection with lifecycle connect; obmux consumes it.
	life := fmt.Sprintf(`{"time":%d,"self_id":%d,"post_type":"meta_event","meta_event_type":"lifecycle","sub_type":"connect"}`,
		time.Now().Unix(), selfID)
	if ws.Write(ctx, websocket.MessageText, []byte(life)) != nil {
		ws.CloseNow()
		return
	}
	select {
	case u.cur <- ws:
	default:
	}
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			return
		}
		var req struct {
			Action string          `json:"action"`
			Params map[string]any  `json:"params"`
			Echo   json.RawMessage `json:"echo"`
		}
		if err := json.Unmarshal(b, &req); err != nil || req.Action == "" {
			u.t.Errorf("upstream: not an API request: %s", b)
			continue
		}
		call := apiCall{Action: req.Action, Params: req.Params, Echo: req.Echo}
		var data string
		switch req.Action {
		case "get_login_info":
			data = fmt.Sprintf(`{"user_id":%d,"nickname":"interop"}`, selfID)
		case "send_private_msg", "send_msg", "send_group_msg":
			call.MessageID = u.nextID.Add(1)
			data = fmt.Sprintf(`{"message_id":%d}`, call.MessageID)
		default:
			data = "null"
		}
		resp := fmt.Appendf(nil, `{"status":"ok","retcode":0,"data":%s,"message":"","wording":""`, data)
		if req.Echo != nil {
			resp = append(append(resp, `,"echo":`...), req.Echo...)
		}
		resp = append(resp, '}')
		select {
		case u.Calls <- call:
		default:
			u.t.Errorf("upstream: too many unread calls")
		}
		if err := ws.Write(ctx, websocket.MessageText, resp); err != nil {
			return
		}
	}
}

// conn returns the connection obmux made.
func (u *upstream) conn(ctx context.Context) *websocket.Conn {
	u.t.Helper()
	select {
	case ws := <-u.cur:
		return ws
	case <-ctx.Done():
		u.t.Fatal("obmux did not connect to the test upstream")
		return nil
	}
}

// privateMessage sends a private message event from user over ws.
func (u *upstream) privateMessage(ctx context.Context, ws *websocket.Conn, user, msgID int64, text string) {
	u.t.Helper()
	tx, _ := json.Marshal(text)
	ev := fmt.Sprintf(`{"self_id":%d,"user_id":%d,"time":%d,"message_id":%d,"message_seq":%d,"real_id":%d,`+
		`"message_type":"private","sub_type":"friend","sender":{"user_id":%d,"nickname":"alice","card":""},`+
		`"raw_message":%s,"font":14,"message":[{"type":"text","data":{"text":%s}}],"message_format":"array","post_type":"message"}`,
		selfID, user, time.Now().Unix(), msgID, msgID, msgID, user, tx, tx)
	if err := ws.Write(ctx, websocket.MessageText, []byte(ev)); err != nil {
		u.t.Fatalf("upstream: send event: %v", err)
	}
}

// nextCall returns the next API call other than obmux's own get_login_info.
func (u *upstream) nextCall(ctx context.Context) apiCall {
	u.t.Helper()
	for {
		select {
		case c := <-u.Calls:
			if c.Action == "get_login_info" {
				continue
			}
			return c
		case <-ctx.Done():
			u.t.Fatal("the test upstream got no API call")
			return apiCall{}
		}
	}
}

func (u *upstream) close() {
	u.srv.Close()
	u.mu.Lock()
	u.closed = true
	conns := u.conns
	u.mu.Unlock()
	for _, ws := range conns {
		ws.CloseNow()
	}
	u.handlers.Wait()
	u.wg.Wait()
}

// str returns params[key] as a string.
func (c apiCall) str(key string) string {
	switch v := c.Params[key].(type) {
	case string:
		return v
	case float64:
		return strconv.FormatFloat(v, 'f', -1, 64)
	case nil:
		return ""
	default:
		b, _ := json.Marshal(v)
		return string(b)
	}
}
