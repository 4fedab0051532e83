package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"

	"github.com/obmux/obmux/internal/sim"
)

// heldCalls makes up hold every get_group_member_list it reads, unanswered,
// and hand its echo (as the upstream read it) to the test.
func heldCalls(up *upstream) chan json.RawMessage {
	held := make(chan json.RawMessage, 16)
	up.custom = func(p *sim.Peer, req []byte) bool {
		var r sim.Request
		if json.Unmarshal(req, &r) != nil || r.Action != "get_group_member_list" {
			return false
		}
		held <- r.Echo
		return true
	}
	return held
}

func nextHeld(t *testing.T, held chan json.RawMessage) json.RawMessage {
	t.Helper()
	select {
	case e := <-held:
		return e
	case <-ctxT(t).Done():
		t.Fatal("the upstream did not get the victim's call")
		return nil
	}
}

const memberList = `[{"group_id":123,"user_id":20002,"role":"owner"}]`

// Issue 13, item 3: a bot that spells "echo" so that obmux does not see it
// (but the implementation's JSON decoder does) must not steal another bot's
// response. The attacker here knows the victim's echo exactly, as the
// upstream read it: the strongest attacker, who guessed right. The sim
// upstream decodes with encoding/json, which unescapes keys, keeps the last
// duplicate and matches names regardless of case, as JSON.parse (escapes,
// last duplicate) and Newtonsoft.Json (case) do.
func TestEchoForgeryAcrossBots(t *testing.T) {
	for _, c := range []struct {
		name, key string
		attacker  func(t *testing.T, got []byte, forged json.RawMessage) // checks the attacker's answer
	}{
		{"escaped key", `"ech\u006f"`, func(t *testing.T, got []byte, forged json.RawMessage) {
			// Its escaped echo is its echo: obmux replaced it and puts it back.
			var r struct {
				Status string
				Echo   json.RawMessage
			}
			if json.Unmarshal(got, &r) != nil || r.Status != "ok" || !bytes.Equal(r.Echo, forged) {
				t.Errorf("attacker's own call: got %s, want status ok with its echo %s back", got, forged)
			}
		}},
		{"key in another case", `"ECHO"`, func(t *testing.T, got []byte, _ json.RawMessage) {
			if !strings.Contains(string(got), `"retcode":1400`) {
				t.Errorf("attacker: got %s, want a 1400 refusal", got)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			up := newUpstream(t, "127.0.0.1:0")
			held := heldCalls(up)
			victim, attacker := newTarget(t), newTarget(t)
			start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_VICTIM_URL="+victim.URL, "OBMUX_TARGET_ATTACKER_URL="+attacker.URL,
				"OBMUX_API_TIMEOUT=2s", "OBMUX_HEARTBEAT_INTERVAL=0")
			up.connected()
			pv, pa := victim.accept(), attacker.accept()

			pv.Send(ctxT(t), []byte(`{"action":"get_group_member_list","params":{"group_id":123},"echo":"v1"}`))
			echo := nextHeld(t, held)
			pa.Send(ctxT(t), []byte(`{"action":"send_msg","params":{"group_id":123,"message":"hi"},`+c.key+`:`+string(echo)+`}`))
			c.attacker(t, next(t, pa), echo)

			up.send(sim.Response(`"ok"`, 0, memberList, echo))
			want := string(sim.Response(`"ok"`, 0, memberList, json.RawMessage(`"v1"`)))
			if got := string(next(t, pv)); got != want {
				t.Fatalf("victim:\n got %s\nwant %s", got, want)
			}
		})
	}
}

var ourEcho = regexp.MustCompile(`^"obmux:([A-Za-z0-9_-]{22}):[1-9][0-9]*:[0-9a-f]{16}"$`)

// Issue 13, item 3: obmux's echoes cannot be guessed, and a response reaches
// a caller only with the exact echo obmux made for that caller's call: the
// old sequential echoes, the right id with another tag, an alias of the id
// and an escaped spelling are all dropped (and counted), and the victim gets
// its own answer only.
func TestForgedEchoesAreNotDelivered(t *testing.T) {
	prefixes := map[string]bool{}
	for range 2 { // two processes: two prefixes
		up := newUpstream(t, "127.0.0.1:0")
		held := heldCalls(up)
		victim := newTarget(t)
		in := start(t, "OBMUX_UPSTREAM_URL="+up.URL, "OBMUX_TARGET_VICTIM_URL="+victim.URL, "OBMUX_HEARTBEAT_INTERVAL=0")
		up.connected()
		pv := victim.accept()
		pv.Send(ctxT(t), []byte(`{"action":"get_group_member_list","params":{"group_id":123},"echo":"v1"}`))
		echo := nextHeld(t, held)
		s := string(echo)
		cut := strings.LastIndexByte(s, ':')
		idAt := strings.LastIndexByte(s[:cut], ':') + 1
		var forged []string
		for i := range 50 {
			forged = append(forged, fmt.Sprintf(`"obmux:%d"`, i)) // what obmux used to send
		}
		otherTag := []byte(s)
		otherTag[cut+1] ^= 1 // '0'<->'1', 'a'<->'`'... still 16 characters
		forged = append(forged, string(otherTag),
			s[:idAt]+"0"+s[idAt:],                                  // the id with a leading zero
			s[:len(s)-2]+`\u00`+fmt.Sprintf("%x", s[len(s)-2])+`"`, // the last character escaped
			`{"echo":`+s+`}`)
		for _, e := range forged {
			up.send(sim.Response(`"ok"`, 0, `"forged"`, json.RawMessage(e)))
		}
		up.send(sim.Response(`"ok"`, 0, memberList, echo))
		want := string(sim.Response(`"ok"`, 0, memberList, json.RawMessage(`"v1"`)))
		if got := string(next(t, pv)); got != want {
			t.Fatalf("victim:\n got %s\nwant %s", got, want)
		}
		m := ourEcho.FindSubmatch(echo)
		if m == nil {
			t.Fatalf("obmux's echo %s is not obmux:<random prefix>:<id>:<random tag>", echo)
		}
		prefixes[string(m[1])] = true
		eventually(t, "every forged response dropped", func() bool {
			return in.metric("obmux_dropped_frames_total", "name=upstream", "reason=target_gone") == float64(len(forged))
		})
		in.stop()
	}
	if len(prefixes) != 2 {
		t.Errorf("two obmux processes used the same echo prefix: %v", prefixes)
	}
}
