// Package fanout is the side of obmux that faces the bot frameworks.
//
// Hub receives the upstream's events (it is the proxy.Sink) and keeps them,
// once, in a shared ring. Every downstream connection, a dialed reverse-WS
// Target or a client of the forward-WS Server, reads the ring through its
// own cursor: broadcasting an event is one append and a wake-up per
// connection, the same byte slice goes to every peer, and a connection's
// queue is simply how far its cursor lags. The ring also serves replay: a
// target that reconnects resumes after the last event written to it.
//
// Every peer gets lifecycle connect first, its own heartbeat timer, WebSocket
// keepalive, and its API calls routed through the proxy.Router with its echo
// isolated from every other peer's.
package fanout
