// Package health keeps every OneBot connection that obmux holds visible:
// per-connection state and Prometheus metrics (the reason and drop labels
// are Reason and Drop), the QQ account's state, refusals before the
// upgrade, failures logged once per change, the /healthz and /readyz
// handlers, the status page and notifications. Keepalive and reconnect
// backoff are the connection's own, in wsconn.
//
// It is used alike by the upstream connection, the reverse-WS targets and the
// forward-WS clients, and of obmux's packages it imports only onebot.
package health
