package wsconn

import (
	"github.com/coder/websocket"

	"github.com/obmux/obmux/health"
)

// Disconnect is an end of a connection that obmux chooses: the reason it
// records (the obmux_disconnects_total label and the logs), and the close
// code and text it sends the peer. Conn.Close and Conn.Abort take one; the
// values obmux uses are predefined below.
type Disconnect struct {
	Reason health.Reason
	Code   websocket.StatusCode
	Text   string
}

// The disconnects obmux chooses.
var (
	// DisconnectShutdown ends every connection when obmux stops.
	DisconnectShutdown = Disconnect{health.ReasonShutdown, websocket.StatusGoingAway, "obmux shutting down"}
	// DisconnectReplaced ends an upstream connection (listen mode) when the
	// implementation connects again with the same account.
	DisconnectReplaced = Disconnect{health.ReasonReplaced, websocket.StatusGoingAway, "replaced by a new connection"}
	// DisconnectSelfIDChanged ends a peer greeted with the account the
	// upstream no longer serves; it reconnects with the new one.
	DisconnectSelfIDChanged = Disconnect{health.ReasonSelfIDChanged, websocket.StatusNormalClosure, "self_id changed"}
	// DisconnectSlowConsumer ends a peer whose backlog outgrew the queue
	// bounds under OBMUX_SLOW_TARGET=disconnect.
	DisconnectSlowConsumer = Disconnect{health.ReasonQueueOverflow, websocket.StatusPolicyViolation, "slow consumer"}
)
