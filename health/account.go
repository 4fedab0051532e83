package health

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Account tracks whether the QQ account behind the upstream is online, as
// the upstream itself reports it (heartbeat status.online, NapCat's and
// Lagrange's bot_offline notice, lifecycle disable and enable), not only
// whether its socket is up. It exports obmux_account_online and
// obmux_account_transitions_total. All methods are safe for concurrent use
// and do nothing on a nil *Account.
type Account struct {
	gauge       prometheus.Gauge
	transitions [2]prometheus.Counter // to offline, to online

	mu       sync.Mutex
	st       AccountState
	hbOnline bool // the last heartbeat's status.online
	watchers []chan struct{}
}

// AccountState is the account as obmux knows it.
type AccountState struct {
	// SelfID is the QQ number, 0 until known.
	SelfID int64 `json:"self_id"`
	// Nickname is get_login_info's nickname, "" until known.
	Nickname string `json:"nickname,omitempty"`
	// Connected says whether the upstream connection is up.
	Connected bool `json:"upstream_connected"`
	// Online is what the upstream last said about the account: true unless
	// it reported it offline since it connected. While not Connected it is
	// the last word of the last connection.
	Online bool `json:"online"`
	// Good is the last heartbeat's status.good.
	Good bool `json:"good"`
	// Since is when Online last changed (zero: never).
	Since time.Time `json:"since,omitzero"`
	// Reason says what the upstream reported last: "heartbeat",
	// "bot_offline: <tag>: <message>", "lifecycle disable", ...
	Reason string `json:"reason,omitempty"`
	// Transitions counts changes of Online.
	Transitions uint64 `json:"transitions"`
}

// Up reports whether the account is usable now: the upstream connected and
// the account online. It is obmux_account_online.
func (s AccountState) Up() bool { return s.Connected && s.Online }

// NewAccount returns an Account whose metrics are registered on reg (nil:
// not registered).
func NewAccount(reg prometheus.Registerer) *Account {
	a := &Account{
		gauge: prometheus.NewGauge(prometheus.GaugeOpts{Name: "obmux_account_online",
			Help: "1 while the upstream is connected and reports the QQ account online (heartbeat status.online, bot_offline notice, lifecycle disable)."}),
		st: AccountState{Online: true, Good: true}, hbOnline: true,
	}
	tr := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "obmux_account_transitions_total",
		Help: "Changes of the QQ account's state as the upstream reports it, by the state changed to."}, []string{"to"})
	a.transitions[0] = tr.WithLabelValues("offline")
	a.transitions[1] = tr.WithLabelValues("online")
	if reg != nil {
		reg.MustRegister(a.gauge, tr)
	}
	return a
}

// State returns the account's state.
func (a *Account) State() AccountState {
	if a == nil {
		return AccountState{}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st
}

// Watch returns a channel that receives (without blocking the sender: it
// holds one pending signal) after every change of the account's state.
func (a *Account) Watch() <-chan struct{} {
	ch := make(chan struct{}, 1)
	if a == nil {
		return ch
	}
	a.mu.Lock()
	a.watchers = append(a.watchers, ch)
	a.mu.Unlock()
	return ch
}

// change applies fn under a.mu, then refreshes the gauge and wakes the
// watchers.
func (a *Account) change(fn func(s *AccountState)) {
	if a == nil {
		return
	}
	a.mu.Lock()
	old := a.st
	fn(&a.st)
	if a.st.Online != old.Online {
		a.st.Since = time.Now()
		a.st.Transitions++
		if a.st.Online {
			a.transitions[1].Inc()
		} else {
			a.transitions[0].Inc()
		}
	}
	up := a.st.Up()
	changed := a.st != old
	watchers := a.watchers
	a.mu.Unlock()
	if up {
		a.gauge.Set(1)
	} else {
		a.gauge.Set(0)
	}
	if changed {
		for _, w := range watchers {
			select {
			case w <- struct{}{}:
			default:
			}
		}
	}
}

// Connected records that the upstream connection came up (the account is
// taken for online until the upstream says otherwise) or went away.
func (a *Account) Connected(up bool) {
	a.change(func(s *AccountState) {
		s.Connected = up
		if up {
			s.Online, s.Good, s.Reason = true, true, "upstream connected"
			a.hbOnline = true
		}
	})
}

// Heartbeat records the status of an upstream heartbeat. status.online
// false makes the account offline; true makes it online again only when the
// heartbeats had said false before, so that an implementation whose
// heartbeats always say true does not undo its own bot_offline notice.
func (a *Account) Heartbeat(online, good bool) {
	a.change(func(s *AccountState) {
		wasOnline := a.hbOnline
		a.hbOnline = online
		s.Good = good && online
		switch {
		case !online && s.Online:
			s.Online, s.Reason = false, "heartbeat status.online=false"
		case online && !wasOnline && !s.Online:
			s.Online, s.Reason = true, "heartbeat status.online=true"
		}
	})
}

// Event records an account event from the upstream: online (lifecycle
// enable) or offline (bot_offline notice, lifecycle disable), with what it
// said.
func (a *Account) Event(online bool, reason string) {
	a.change(func(s *AccountState) {
		if s.Online != online {
			s.Online, s.Good, s.Reason = online, online, reason
		}
	})
}

// SetSelfID records the account's QQ number.
func (a *Account) SetSelfID(id int64) {
	a.change(func(s *AccountState) {
		if s.SelfID != id {
			s.SelfID, s.Nickname = id, ""
		}
	})
}

// SetNickname records the nickname of account id (from get_login_info); it
// is ignored when id is no longer the account's.
func (a *Account) SetNickname(id int64, name string) {
	a.change(func(s *AccountState) {
		if s.SelfID == id {
			s.Nickname = name
		}
	})
}
