// Package health keeps every OneBot connection that obmux holds honest and
// visible: WebSocket keepalive with RTT measurement, reconnect backoff, the
// OneBot heartbeat and lifecycle meta events, per-connection state and
// Prometheus metrics, and the /healthz and /readyz HTTP handlers.
//
// It is used alike by the upstream connection, the reverse-WS targets and the
// forward-WS clients, and it imports no other obmux package.
package health
