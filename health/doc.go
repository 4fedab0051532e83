// Package health keeps every OneBot connection that obmux holds honest and
// visible: WebSocket keepalive with RTT measurement, reconnect backoff,
// per-connection state and Prometheus metrics, failures logged once per
// change, and the /healthz and /readyz HTTP handlers.
//
// It is used alike by the upstream connection, the reverse-WS targets and the
// forward-WS clients, and of obmux's packages it imports only onebot.
package health
