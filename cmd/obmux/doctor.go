package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/obmux/obmux/config"
	"github.com/obmux/obmux/fanout"
	"github.com/obmux/obmux/natsbus"
	"github.com/obmux/obmux/onebot"
	"github.com/obmux/obmux/proxy"
	"github.com/obmux/obmux/wsconn"
)

// doctorOpts tunes obmux doctor (the tests shorten the wait).
type doctorOpts struct {
	// UpstreamWait is how long a listening doctor without OBMUX_SELF_ID waits
	// for the implementation to connect, to learn the self_id.
	UpstreamWait time.Duration
}

// doctorResult is one line of the doctor's report.
type doctorResult struct {
	ok     bool
	what   string // "upstream", "target nonebot", ...
	detail string
}

// doctor checks the configuration obmux would run with and tries each of
// its connections once: every problem, the effective configuration (tokens
// as ***), then one line per connection. It fails (exit 1) unless all are
// OK.
func doctor(ctx context.Context, environ []string, stdout io.Writer) error {
	return runDoctor(ctx, environ, stdout, doctorOpts{UpstreamWait: 10 * time.Second})
}

func runDoctor(ctx context.Context, environ []string, out io.Writer, o doctorOpts) error {
	fmt.Fprintln(out, "obmux doctor", version)
	cfg, err := config.Load(environ)
	healthy := err == nil
	if err != nil {
		var ce *config.Error
		if !errors.As(err, &ce) {
			return err
		}
		fmt.Fprintf(out, "\nconfiguration: NOT OK, %s\n", strings.ReplaceAll(err.Error(), "\n  ", "\n  - "))
	} else {
		fmt.Fprintln(out, "\nconfiguration: OK")
	}
	fmt.Fprintln(out, "\neffective configuration (* set in the environment, else the default; tokens as ***):")
	for _, l := range effectiveConfig(cfg, environ) {
		fmt.Fprintln(out, "  "+l)
	}

	fmt.Fprintln(out, "\nconnections (each tried once):")
	results := doctorConnections(ctx, cfg, o)
	n := 0
	for _, r := range results {
		mark := "FAIL"
		if r.ok {
			mark, n = "OK  ", n+1
		}
		fmt.Fprintf(out, "  %s  %-16s %s\n", mark, r.what, r.detail)
	}
	fmt.Fprintf(out, "\n%d of %d OK\n", n, len(results))
	if !healthy || n < len(results) {
		return errUnhealthy
	}
	return nil
}

// effectiveConfig lists every variable obmux reads, with the value in
// effect: tokens as ***, URLs and any other value without their query or
// userinfo.
func effectiveConfig(cfg config.Config, environ []string) []string {
	set := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(strings.ToUpper(k), config.Prefix) {
			set[k] = v
		}
	}
	shown := map[string]bool{}
	var lines []string
	add := func(name, value string) {
		shown[name] = true
		mark := " "
		if _, ok := set[name]; ok {
			mark = "*"
		}
		switch {
		case value == "":
			value = "(empty)"
		case strings.HasSuffix(name, "TOKEN"):
			value = "***"
		}
		lines = append(lines, fmt.Sprintf("%s %-32s %s", mark, name, wsconn.RedactText(value)))
	}
	v := reflect.ValueOf(cfg)
	for i := range v.NumField() {
		tag, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("env"), ",")
		if tag == "" || tag == "-" {
			continue
		}
		value := fmt.Sprint(v.Field(i).Interface())
		if tag == "SELF_ID" && cfg.SelfID == 0 {
			value = "(empty: learned from the upstream)"
		}
		add(config.Prefix+tag, value)
	}
	for _, t := range cfg.Targets {
		add(t.EnvPrefix+"_URL", t.URL)
		add(t.EnvPrefix+"_TOKEN", t.Token)
	}
	// The rest as written: per-bot policies (OBMUX_TARGET_<NAME>_GROUPS,
	// OBMUX_FORWARD_FILTER, ...) and whatever the configuration refused.
	var rest []string
	for k := range set {
		if !shown[k] {
			rest = append(rest, k)
		}
	}
	sort.Strings(rest)
	for _, k := range rest {
		add(k, set[k])
	}
	return lines
}

// doctorConnections tries the upstream, then every target with the self_id
// (OBMUX_SELF_ID, else the upstream's), and checks the other listen
// addresses.
func doctorConnections(ctx context.Context, cfg config.Config, o doctorOpts) []doctorResult {
	var results []doctorResult
	ua := "obmux/" + version
	selfID := cfg.SelfID
	if cfg.Edge() {
		results = append(results, doctorNATS(ctx, cfg, "upstream (NATS edge)", natsConsumer(cfg)))
	} else if cfg.UpstreamURL != "" {
		r, id := doctorDialUpstream(ctx, cfg, ua)
		results = append(results, r)
		if selfID == 0 {
			selfID = id
		}
	} else {
		r, id := doctorListenUpstream(ctx, cfg, o.UpstreamWait)
		results = append(results, r)
		if selfID == 0 {
			selfID = id
		}
	}
	if cfg.NATSURL != "" {
		results = append(results, doctorNATS(ctx, cfg, "NATS", ""))
	}
	for _, t := range cfg.Targets {
		what := "target " + t.Name
		if selfID == 0 {
			results = append(results, doctorResult{what: what, detail: wsconn.RedactURL(t.URL) + ": not tried: the self_id (X-Self-ID) is " +
				"unknown; set OBMUX_SELF_ID to the QQ number, or get the upstream connected"})
			continue
		}
		results = append(results, doctorDialTarget(ctx, t, selfID, ua))
	}
	if cfg.ForwardListen != "" {
		results = append(results, doctorListen("forward-WS", "FORWARD_LISTEN", cfg.ForwardListen,
			"forward-WS clients connect to ws://<obmux>:%s/ (events and API), /event or /api"))
	}
	results = append(results, doctorListen("metrics", "METRICS_LISTEN", cfg.MetricsListen,
		"status page http://<obmux>:%s/, /readyz, /metrics"))
	return results
}

// doctorNATS connects to NATS once: the stream, and an edge's consumer.
func doctorNATS(ctx context.Context, cfg config.Config, what, consumer string) doctorResult {
	detail, err := natsbus.Probe(ctx, natsbus.ConnConfig{URL: cfg.NATSServers(), Creds: cfg.NATSCreds, Token: cfg.NATSToken,
		Name: "obmux doctor"}, cfg.NATSStream, consumer)
	if err != nil {
		return doctorResult{what: what, detail: wsconn.RedactText(err.Error())}
	}
	return doctorResult{what: what, ok: true, detail: detail}
}

// doctorDialUpstream dials the implementation as obmux would and asks it
// get_login_info, for the round trip and the self_id.
func doctorDialUpstream(ctx context.Context, cfg config.Config, ua string) (doctorResult, int64) {
	r := doctorResult{what: "upstream"}
	url := wsconn.RedactURL(cfg.UpstreamURL)
	began := time.Now()
	ws, raw, err := wsconn.Dial(ctx, cfg.UpstreamURL, proxy.DialHeader(cfg.UpstreamToken, ua))
	if err != nil {
		r.detail = fmt.Sprintf("%s: %s: %s", url, doctorError(err), proxy.DialHint(err, cfg.UpstreamToken != ""))
		return r, 0
	}
	handshake := time.Since(began)
	p := newDoctorPeer(ws, raw)
	defer p.close("obmux doctor")
	began = time.Now()
	resp, err := p.call(ctx, `{"action":"get_login_info","params":{},"echo":"obmux-doctor"}`, "obmux-doctor")
	if err != nil {
		r.detail = fmt.Sprintf("%s: connected (handshake %s), but get_login_info got no answer: %v", url, ms(handshake), err)
		return r, 0
	}
	rtt := time.Since(began)
	var login struct {
		Data struct {
			UserID   int64  `json:"user_id"`
			Nickname string `json:"nickname"`
		} `json:"data"`
	}
	if json.Unmarshal(resp, &login) != nil || login.Data.UserID == 0 {
		r.detail = fmt.Sprintf("%s: connected (handshake %s), but get_login_info answered no user_id: %.200s", url, ms(handshake), resp)
		return r, 0
	}
	r.ok = true
	r.detail = fmt.Sprintf("%s: handshake %s, get_login_info %s: QQ %d (%s)", url, ms(handshake), ms(rtt),
		login.Data.UserID, login.Data.Nickname)
	return r, login.Data.UserID
}

// doctorListenUpstream checks that obmux can listen for the implementation
// and says what it must be told; without OBMUX_SELF_ID it waits up to wait
// for the implementation to connect, to learn the self_id.
func doctorListenUpstream(ctx context.Context, cfg config.Config, wait time.Duration) (doctorResult, int64) {
	r := doctorResult{what: "upstream"}
	_, port, _ := net.SplitHostPort(cfg.UpstreamListen)
	token := "no token (set OBMUX_UPSTREAM_TOKEN if the port is reachable from other hosts)"
	if cfg.UpstreamToken != "" {
		token = "token = the value of OBMUX_UPSTREAM_TOKEN"
	}
	tell := fmt.Sprintf("tell NapCat (network > websocketClients): url ws://<obmux>:%s%s, %s", port, cfg.UpstreamPath, token)
	ln, err := net.Listen("tcp", cfg.UpstreamListen)
	if err != nil {
		r.detail = fmt.Sprintf("cannot listen on %s (OBMUX_UPSTREAM_LISTEN): %v: another program holds the port (on one host, "+
			"usually NoneBot on 8080; or obmux itself is running); %s", cfg.UpstreamListen, err, tell)
		return r, 0
	}
	defer ln.Close()
	if cfg.SelfID != 0 {
		r.ok = true
		r.detail = fmt.Sprintf("obmux will listen on %s%s (port free); %s", cfg.UpstreamListen, cfg.UpstreamPath, tell)
		return r, 0
	}
	id, from, err := awaitUpstream(ctx, ln, cfg, wait)
	if err != nil {
		r.detail = fmt.Sprintf("listening on %s%s, %v; %s (or set OBMUX_SELF_ID)", cfg.UpstreamListen, cfg.UpstreamPath, err, tell)
		return r, 0
	}
	r.ok = true
	r.detail = fmt.Sprintf("listening on %s%s: the implementation connected from %s as QQ %d; %s", cfg.UpstreamListen, cfg.UpstreamPath,
		from, id, tell)
	return r, id
}

// awaitUpstream serves ln as obmux's upstream endpoint until one connection
// with a self_id arrives (its X-Self-ID, else its first frame's self_id) or
// wait passes; what went wrong with the requests that came is the error.
func awaitUpstream(ctx context.Context, ln net.Listener, cfg config.Config, wait time.Duration) (int64, string, error) {
	type got struct {
		id   int64
		from string
	}
	found := make(chan got, 1)
	var mu sync.Mutex
	var problems []string
	problem := func(p string) {
		mu.Lock()
		defer mu.Unlock()
		if len(problems) < 5 {
			problems = append(problems, p)
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc(cfg.UpstreamPath, func(w http.ResponseWriter, req *http.Request) {
		if code := onebot.Authorize(req, cfg.UpstreamToken); code != 0 {
			problem(fmt.Sprintf("%s was refused with HTTP %d: its token is not OBMUX_UPSTREAM_TOKEN", req.RemoteAddr, code))
			http.Error(w, http.StatusText(code), code)
			return
		}
		ws, raw, err := wsconn.Accept(w, req)
		if err != nil {
			return
		}
		p := newDoctorPeer(ws, raw)
		defer p.close("obmux doctor: checked")
		id, _ := strconv.ParseInt(req.Header.Get("X-Self-ID"), 10, 64)
		if id <= 0 {
			id = p.selfID(req.Context())
		}
		if id > 0 {
			select {
			case found <- got{id, req.RemoteAddr}:
			default:
			}
		}
	})
	if cfg.UpstreamPath != "/" {
		mux.HandleFunc("/", func(w http.ResponseWriter, req *http.Request) {
			problem(fmt.Sprintf("%s came on the wrong path %s (use %s)", req.RemoteAddr, req.URL.Path, cfg.UpstreamPath))
			http.NotFound(w, req)
		})
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	defer srv.Close()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case g := <-found:
		return g.id, g.from, nil
	case <-ctx.Done():
		return 0, "", ctx.Err()
	case <-timer.C:
	}
	mu.Lock()
	defer mu.Unlock()
	if len(problems) > 0 {
		return 0, "", fmt.Errorf("no good connection within %s: %s", wait, strings.Join(problems, "; "))
	}
	return 0, "", fmt.Errorf("no implementation connected within %s", wait)
}

// doctorDialTarget dials a target with the headers obmux would send, greets
// it, measures a ping and watches it for wsconn.RefusedWithin: a framework
// that closes at once refused the connection.
func doctorDialTarget(ctx context.Context, t fanout.TargetConfig, selfID int64, ua string) doctorResult {
	r := doctorResult{what: "target " + t.Name}
	url := wsconn.RedactURL(t.URL)
	began := time.Now()
	ws, raw, err := wsconn.Dial(ctx, t.URL, fanout.DialHeader(t, selfID, ua))
	if err != nil {
		r.detail = fmt.Sprintf("%s: %s: %s", url, doctorError(err), fanout.DialHint(t, err))
		return r
	}
	handshake := time.Since(began)
	p := newDoctorPeer(ws, raw)
	defer p.close("obmux doctor: checked")
	p.send(ctx, onebot.Lifecycle(time.Now(), selfID, onebot.LifecycleConnect))
	pingCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	began = time.Now()
	pingErr := ws.Ping(pingCtx)
	rtt := time.Since(began)
	// A refusal comes at once; watch for it as long as obmux would.
	watch := time.NewTimer(wsconn.RefusedWithin)
	defer watch.Stop()
	select {
	case <-p.done:
		var ce websocket.CloseError
		if errors.As(p.err, &ce) {
			re := &wsconn.RefusedError{Code: ce.Code, Reason: ce.Reason}
			r.detail = fmt.Sprintf("%s: %v: %s", url, re, fanout.RefusedHint(t, re, selfID))
		} else {
			r.detail = fmt.Sprintf("%s: connected, then the connection was lost at once: %v", url, p.err)
		}
		return r
	case <-watch.C:
	case <-ctx.Done():
		r.detail = url + ": " + ctx.Err().Error()
		return r
	}
	if pingErr != nil {
		r.detail = fmt.Sprintf("%s: connected (handshake %s), but no pong: %v", url, ms(handshake), pingErr)
		return r
	}
	r.ok = true
	r.detail = fmt.Sprintf("%s: handshake %s, ping %s (X-Self-ID %d)", url, ms(handshake), ms(rtt), selfID)
	return r
}

// doctorListen checks that obmux can listen on addr.
func doctorListen(what, variable, addr, use string) doctorResult {
	r := doctorResult{what: what}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		r.detail = fmt.Sprintf("cannot listen on %s (%s%s): %v: another program holds the port (or obmux itself is running)",
			addr, config.Prefix, variable, err)
		return r
	}
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	r.ok = true
	r.detail = fmt.Sprintf("%s free: %s", addr, fmt.Sprintf(use, port))
	return r
}

// doctorError says what a failed dial was, with the HTTP status when the
// peer answered one.
func doctorError(err error) string {
	var se *wsconn.HTTPStatusError
	if errors.As(err, &se) {
		return fmt.Sprintf("HTTP %d %s", se.Status, http.StatusText(se.Status))
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) {
		return dnsErr.Error()
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return oe.Error() // dial tcp host:port: connect: connection refused
	}
	return err.Error()
}

// ms formats a duration in milliseconds.
func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d.Microseconds())/1000, 'f', 1, 64) + " ms"
}

// doctorPeer is one connection the doctor holds: a reader puts every
// message on frames until the connection ends (done, err).
type doctorPeer struct {
	ws     *websocket.Conn
	raw    io.Closer
	frames chan []byte
	done   chan struct{}
	err    error
}

func newDoctorPeer(ws *websocket.Conn, raw io.Closer) *doctorPeer {
	p := &doctorPeer{ws: ws, raw: raw, frames: make(chan []byte, 64), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		for {
			_, b, err := ws.Read(context.Background())
			if err != nil {
				p.err = err
				return
			}
			select {
			case p.frames <- b:
			default: // the doctor reads only what it asked for
			}
		}
	}()
	return p
}

func (p *doctorPeer) send(ctx context.Context, b []byte) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	return p.ws.Write(ctx, websocket.MessageText, b)
}

// call sends req and returns the frame whose echo is echo.
func (p *doctorPeer) call(ctx context.Context, req, echo string) ([]byte, error) {
	if err := p.send(ctx, []byte(req)); err != nil {
		return nil, err
	}
	return p.await(ctx, func(b []byte) bool {
		var f struct {
			Echo string `json:"echo"`
		}
		return json.Unmarshal(b, &f) == nil && f.Echo == echo
	})
}

// selfID returns the self_id of the first frame that has one (within 5 s),
// or 0.
func (p *doctorPeer) selfID(ctx context.Context) int64 {
	var id int64
	p.await(ctx, func(b []byte) bool {
		var f struct {
			SelfID int64 `json:"self_id"`
		}
		if json.Unmarshal(b, &f) == nil && f.SelfID > 0 {
			id = f.SelfID
		}
		return id > 0
	})
	return id
}

// await returns the first frame that match accepts, waiting at most 5 s
// and until the connection ends.
func (p *doctorPeer) await(ctx context.Context, match func(b []byte) bool) ([]byte, error) {
	timer := time.NewTimer(5 * time.Second)
	defer timer.Stop()
	for {
		select {
		case b := <-p.frames:
			if match(b) {
				return b, nil
			}
		case <-p.done:
			return nil, fmt.Errorf("the connection ended: %w", p.err)
		case <-timer.C:
			return nil, errors.New("no answer within 5s")
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// close ends the connection with 1000 and waits for the reader.
func (p *doctorPeer) close(why string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { p.ws.Close(websocket.StatusNormalClosure, why); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		p.ws.CloseNow()
	}
	if p.raw != nil {
		p.raw.Close()
	}
	<-p.done
}
