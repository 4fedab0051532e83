package onebot

import (
	"encoding/json"
	"strconv"
)

// OneBot retcodes obmux answers with on its own.
const (
	RetcodeBadRequest      = 1400
	RetcodeForbidden       = 1403
	RetcodeUpstreamDown    = 1502
	RetcodeUpstreamTimeout = 1504
)

// Failure returns a OneBot failure response with retcode and msg, as both
// "message" and "wording" (NapCat and go-cqhttp send both; frameworks show
// either), and echo (raw JSON) if not nil.
func Failure(retcode int, msg string, echo []byte) []byte {
	q, _ := json.Marshal(msg)
	b := make([]byte, 0, 96+2*len(q)+len(echo))
	b = append(b, `{"status":"failed","retcode":`...)
	b = strconv.AppendInt(b, int64(retcode), 10)
	b = append(b, `,"data":null,"message":`...)
	b = append(b, q...)
	b = append(b, `,"wording":`...)
	b = append(b, q...)
	if echo != nil {
		b = append(b, `,"echo":`...)
		b = append(b, echo...)
	}
	return append(b, '}')
}
