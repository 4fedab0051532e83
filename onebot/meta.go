package onebot

import (
	"strconv"
	"time"
)

// Lifecycle sub types sent by obmux.
const (
	LifecycleConnect = "connect"
	LifecycleDisable = "disable"
)

// Lifecycle returns a OneBot v11 lifecycle meta event for selfID.
func Lifecycle(now time.Time, selfID int64, subType string) []byte {
	b := make([]byte, 0, 128)
	b = appendMetaHead(b, now, selfID)
	b = append(b, `"lifecycle","sub_type":"`...)
	b = append(b, subType...)
	b = append(b, `"}`...)
	return b
}

// Status is what a heartbeat reports about the upstream implementation.
type Status struct {
	// Online and Good say whether the upstream is connected and healthy now.
	Online, Good bool
	// Extra holds the upstream's last get_status fields other than online
	// and good, as the members of a JSON object without braces
	// (`"stat":{...}`), or nil.
	Extra []byte
}

// Heartbeat returns a OneBot v11 heartbeat meta event. interval is reported
// in milliseconds, as the specification says.
func Heartbeat(now time.Time, selfID int64, st Status, interval time.Duration) []byte {
	b := make([]byte, 0, 160+len(st.Extra))
	b = appendMetaHead(b, now, selfID)
	b = append(b, `"heartbeat","status":{"online":`...)
	b = strconv.AppendBool(b, st.Online)
	b = append(b, `,"good":`...)
	b = strconv.AppendBool(b, st.Good)
	if len(st.Extra) > 0 {
		b = append(b, ',')
		b = append(b, st.Extra...)
	}
	b = append(b, `},"interval":`...)
	b = strconv.AppendInt(b, interval.Milliseconds(), 10)
	b = append(b, '}')
	return b
}

func appendMetaHead(b []byte, now time.Time, selfID int64) []byte {
	b = append(b, `{"time":`...)
	b = strconv.AppendInt(b, now.Unix(), 10)
	b = append(b, `,"self_id":`...)
	b = strconv.AppendInt(b, selfID, 10)
	b = append(b, `,"post_type":"meta_event","meta_event_type":`...)
	return b
}
