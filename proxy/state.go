package proxy

import (
	"sync"

	"github.com/obmux/obmux/onebot"
)

// State is what obmux knows about the upstream right now.
type State struct {
	// Online is true while an upstream connection is up.
	Online bool
	// SelfID is the bot's QQ number, 0 until known.
	SelfID int64
	// Status is the upstream's own status from its last heartbeat.
	Status onebot.Status
}

// UpstreamState holds the upstream's State and tells watchers of every
// change: the Upstream writes it, the fan-out reads it (it is what the hub
// greets peers with and what their heartbeats report). It is safe for
// concurrent use.
type UpstreamState struct {
	mu      sync.Mutex
	state   State
	changed chan struct{} // closed and replaced at each change
}

// NewUpstreamState returns the state of an upstream not connected yet, its
// self_id unknown.
func NewUpstreamState() *UpstreamState {
	return &UpstreamState{state: State{Status: onebot.Status{Good: true}}, changed: make(chan struct{})}
}

// State returns the upstream's state and a channel closed at its next change.
func (u *UpstreamState) State() (State, <-chan struct{}) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.state
	s.Status.Online = s.Online
	s.Status.Good = s.Online && s.Status.Good
	return s, u.changed
}

// selfID returns the self_id, 0 while unknown.
func (u *UpstreamState) selfID() int64 {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.state.SelfID
}

// Update changes the state with fn and wakes the watchers when it changed:
// for a source of events other than Upstream (the NATS edge).
func (u *UpstreamState) Update(fn func(*State)) { u.update(fn) }

// update changes the state with fn and wakes the watchers when it changed.
func (u *UpstreamState) update(fn func(*State)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	old := u.state
	fn(&u.state)
	if u.state.Online != old.Online || u.state.SelfID != old.SelfID || u.state.Status.Good != old.Status.Good {
		close(u.changed)
		u.changed = make(chan struct{})
	}
}
