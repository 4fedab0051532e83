package onebot

import (
	"encoding/json"
	"testing"
	"time"
)

func TestMetaEventsAreOneBotJSON(t *testing.T) {
	now := time.Unix(1790000000, 0)
	var lc map[string]any
	if err := json.Unmarshal(Lifecycle(now, 10001, LifecycleDisable), &lc); err != nil {
		t.Fatal(err)
	}
	if lc["post_type"] != "meta_event" || lc["meta_event_type"] != "lifecycle" || lc["sub_type"] != "disable" ||
		lc["self_id"] != float64(10001) || lc["time"] != float64(1790000000) {
		t.Errorf("lifecycle %v", lc)
	}
	hb := Heartbeat(now, 10001, Status{Online: true, Good: false, Extra: []byte(`"stat":{"packet_lost":1}`)}, 5*time.Second)
	want := `{"time":1790000000,"self_id":10001,"post_type":"meta_event","meta_event_type":"heartbeat","status":{"online":true,"good":false,"stat":{"packet_lost":1}},"interval":5000}`
	if string(hb) != want {
		t.Errorf("heartbeat\n got %s\nwant %s", hb, want)
	}
}
