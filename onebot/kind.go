package onebot

// Kind is what kind of OneBot frame a frame is; it is also the
// obmux_frames_total "kind" label.
type Kind uint8

// Frame kinds.
const (
	KindEvent Kind = iota
	KindHeartbeat
	KindLifecycle
	KindAPIRequest
	KindAPIResponse
	KindInvalid
	NumKinds // how many kinds there are
)

var kindNames = [NumKinds]string{"event", "heartbeat", "lifecycle", "api_request", "api_response", "invalid"}

func (k Kind) String() string { return kindNames[k] }
