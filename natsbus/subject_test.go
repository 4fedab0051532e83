package natsbus

import "testing"

func TestEventSubject(t *testing.T) {
	cases := []struct {
		frame string
		want  string // "": not published
	}{
		{`{"post_type":"message","message_type":"group","self_id":10001}`, "onebot.10001.event.message.group"},
		{`{"self_id":10001,"post_type":"notice","notice_type":"group_recall"}`, "onebot.10001.event.notice.group_recall"},
		{`{"post_type":"request","request_type":"friend"}`, "onebot.42.event.request.friend"},
		{`{"post_type":"message_sent","message_type":"private","self_id":7}`, "onebot.7.event.message_sent.private"},
		{`{"post_type":"custom"}`, "onebot.42.event.custom"},
		{`{"post_type":"meta_event","meta_event_type":"heartbeat"}`, ""},
		{`{"message_type":"group"}`, ""},
		{`{"post_type":"message","message_type":"a.b *>"}`, "onebot.42.event.message.a_b___"},
		{`{"post_type":"message","message_type":"\u0067roup"}`, "onebot.42.event.message._u0067roup"},
		{`{"post_type":"notice","notice_type":5}`, "onebot.42.event.notice"},
	}
	for _, c := range cases {
		got, ok := EventSubject(42, []byte(c.frame))
		if !ok {
			got = ""
		}
		if got != c.want {
			t.Errorf("EventSubject(%s) = %q, want %q", c.frame, got, c.want)
		}
	}
}

func TestDefaultConsumer(t *testing.T) {
	for host, want := range map[string]string{"edge-7f9c": "obmux-edge-edge-7f9c", "pod.ns.svc": "obmux-edge-pod_ns_svc", "": "obmux-edge-default"} {
		if got := DefaultConsumer(host); got != want {
			t.Errorf("DefaultConsumer(%q) = %q, want %q", host, got, want)
		}
	}
}

func BenchmarkEventSubject(b *testing.B) {
	frame := []byte(`{"time":1700000000,"self_id":10001,"post_type":"message","message_type":"group","sub_type":"normal","message_id":1,"group_id":2,"user_id":3,"message":[{"type":"text","data":{"text":"hello"}}],"raw_message":"hello","font":0,"sender":{"user_id":3,"nickname":"n"}}`)
	b.ReportAllocs()
	for b.Loop() {
		EventSubject(0, frame)
	}
}
