// Package natsbus puts the account's OneBot events on NATS JetStream and
// serves its API over NATS request/reply, so that bots on other machines can
// consume every account's events durably and call the right account.
//
// The account side of obmux publishes each upstream event (meta events
// excepted) on onebot.<self_id>.event.<post_type>[.<detail>] with a
// Nats-Msg-Id that makes a re-publish after a reconnect a no-op, and the
// account's online changes on onebot.<self_id>.status. Publishing never
// waits for NATS: events wait in a buffer bounded in events and bytes while
// NATS is away, and what overflows it is counted.
package natsbus
