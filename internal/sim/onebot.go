package sim

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Request is an API request as a simulated implementation reads it.
type Request struct {
	Action string          `json:"action"`
	Params json.RawMessage `json:"params"`
	Echo   json.RawMessage `json:"echo"`
}

// Answer returns what a simulated implementation with selfID answers to req:
// get_login_info, get_status, send_msg, send_private_msg and
// send_group_msg succeed, anything else fails with 1404.
func Answer(selfID int64, req []byte) []byte {
	var r Request
	if err := json.Unmarshal(req, &r); err != nil {
		return []byte(`{"status":"failed","retcode":1400,"data":null,"message":"bad json"}`)
	}
	var data string
	switch r.Action {
	case "get_login_info":
		data = fmt.Sprintf(`{"user_id":%d,"nickname":"obmux-sim"}`, selfID)
	case "get_status":
		data = `{"online":true,"good":true}`
	case "send_msg", "send_private_msg", "send_group_msg":
		data = fmt.Sprintf(`{"message_id":%d}`, time.Now().UnixNano()%1e9)
	default:
		return Response(`"failed"`, 1404, "null", r.Echo)
	}
	return Response(`"ok"`, 0, data, r.Echo)
}

// Response builds a NapCat-shaped response frame.
func Response(status string, retcode int, data string, echo json.RawMessage) []byte {
	b := fmt.Appendf(nil, `{"status":%s,"retcode":%d,"data":%s,"message":"","wording":""`, status, retcode, data)
	if echo != nil {
		b = append(b, `,"echo":`...)
		b = append(b, echo...)
	}
	return append(b, '}')
}

// PrivateMessage returns a private message event from user with text.
func PrivateMessage(selfID, user int64, msgID int64, text string) []byte {
	t, _ := json.Marshal(text)
	return fmt.Appendf(nil, `{"self_id":%d,"user_id":%d,"time":%d,"message_id":%d,"message_type":"private","sub_type":"friend",`+
		`"message":[{"type":"text","data":{"text":%s}}],"raw_message":%s,"font":14,"sender":{"user_id":%d,"nickname":"user"},"post_type":"message"}`,
		selfID, user, time.Now().Unix(), msgID, t, t, user)
}

// Lifecycle returns an upstream lifecycle meta event.
func Lifecycle(selfID int64, sub string) []byte {
	return []byte(`{"time":` + strconv.FormatInt(time.Now().Unix(), 10) + `,"self_id":` + strconv.FormatInt(selfID, 10) +
		`,"post_type":"meta_event","meta_event_type":"lifecycle","sub_type":"` + sub + `"}`)
}
