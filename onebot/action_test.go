package onebot

import "testing"

func TestBaseAction(t *testing.T) {
	for _, c := range []struct{ frame, want string }{
		{`{"action":"send_msg"}`, "send_msg"},
		{`{"action":"send_msg_async"}`, "send_msg"},
		{`{"action":"send_msg_rate_limited"}`, "send_msg"},
		{`{"action":"send_msg_async_rate_limited"}`, "send_msg"},
		{`{"action":"send_msg_rate_limited_async"}`, "send_msg"},
		{`{"action":"_async"}`, ""},
		{`{"action":"\u0073end_msg\u005fasync"}`, "send_msg"},
		{`{"action":"get_status" , "echo":1}`, "get_status"},
		{`{"action":7}`, "7"},
		{`{"echo":7}`, ""},
	} {
		f, err := Scan([]byte(c.frame))
		if err != nil {
			t.Fatal(err)
		}
		if got := string(BaseAction([]byte(c.frame), f)); got != c.want {
			t.Errorf("%s: %q, want %q", c.frame, got, c.want)
		}
	}
}

func TestFailure(t *testing.T) {
	for _, c := range []struct {
		echo, want string
	}{
		{`{"seq":7}`, `{"status":"failed","retcode":1403,"data":null,"message":"no \"x\"","wording":"no \"x\"","echo":{"seq":7}}`},
		{"", `{"status":"failed","retcode":1403,"data":null,"message":"no \"x\"","wording":"no \"x\""}`},
	} {
		var echo []byte
		if c.echo != "" {
			echo = []byte(c.echo)
		}
		if got := string(Failure(RetcodeForbidden, `no "x"`, echo)); got != c.want {
			t.Errorf("got  %s\nwant %s", got, c.want)
		}
	}
}
