// Package proxy is the side of obmux that faces the OneBot implementation.
//
// Upstream owns the single upstream connection (dialed, or accepted from the
// implementation's reverse WS), reads its frames, hands events to a Sink,
// consumes the upstream's own heartbeat and lifecycle meta events, and learns
// the bot's self_id. Router routes API calls: it gives each call an echo that
// is unique across all callers, remembers the caller and its original echo,
// restores that echo byte for byte on the response, and answers on its own
// when the upstream is down (1502), slow (1504) or the request is bad (1400).
// With a SendLimit, the Router also holds the message sends of every caller
// to one account-wide rate, in a fair queue (sendqueue.go).
//
// The frames themselves are package onebot's. proxy knows nothing of targets
// or clients.
package proxy
