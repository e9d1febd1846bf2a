// Package presence tracks who is on a channel: the members of each channel's presence,
// the streams that watch it, and the joins and leaves between them. It is shared by every
// broker backend: on one node a Tracker is all there is; several nodes share their
// members through a Bus (cluster.go), which a distributed backend provides.
//
// A member is a client id on a channel. It is present while any of these claims holds: a
// local stream joined with it, the grace period after its last local stream ended, or
// another node announcing it (until that node's announcements expire). Its join is
// emitted when the first claim appears and its leave when the last one goes, so a quick
// reconnect within the grace period, or a move to another node, emits nothing.
//
// Presence is ephemeral: nothing is stored, events have no seq, and a watcher that falls
// behind gets a fresh snapshot instead of the events it missed. This package never
// imports Connect.
package presence

import (
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/actionsync/actionsync/broker"
	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// Defaults for Options.
const (
	DefaultGrace      = 5 * time.Second
	DefaultMaxMembers = 100
	DefaultQueueSize  = 256
	DefaultRefresh    = 3 * time.Second
)

// Options configures a Tracker. The zero value of each field means its default.
type Options struct {
	// Grace is how long a member stays present after its last local stream ended
	// (default 5s; negative: no grace, it leaves at once).
	Grace time.Duration
	// MaxMembers is the most members listed per channel in snapshots and Get (default
	// 100): those that joined first. Counts cover every member.
	MaxMembers int
	// QueueSize is the most events queued for one watcher (default 256); past it the
	// queue is dropped and the watcher gets a fresh snapshot of its channels instead.
	QueueSize int
	// Bus, if set, shares members with the other nodes on it (cluster.go); nil: this node
	// only.
	Bus Bus
	// Refresh is how often this node announces its members on the Bus (default 3s).
	// Other nodes drop a member this node announced after 3 × Refresh without an
	// announcement: a node that dies has its members leave within 3.25 × Refresh.
	Refresh time.Duration
	// Now is the clock (default time.Now); tests set it.
	Now func() time.Time
}

func (o Options) withDefaults() Options {
	if o.Grace == 0 {
		o.Grace = DefaultGrace
	}
	if o.Grace < 0 {
		o.Grace = 0
	}
	if o.MaxMembers <= 0 {
		o.MaxMembers = DefaultMaxMembers
	}
	if o.QueueSize <= 0 {
		o.QueueSize = DefaultQueueSize
	}
	if o.Refresh <= 0 {
		o.Refresh = DefaultRefresh
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o
}

// ErrNotMember is returned by Update for a client id that is not a member of the
// channel's presence.
var ErrNotMember = errors.New("not a member of the channel's presence")

// Tracker holds the presence of every channel that has members or watchers on this node.
// All methods are safe for concurrent use. One mutex guards everything: presence changes
// at the rate people come and go, far below the rate of actions, and one lock keeps the
// order of events the same for every watcher of a channel.
type Tracker struct {
	opts Options

	mu       sync.Mutex
	channels map[string]*channel
	joins    uint64 // join order of members, for listing
	closed   bool

	cluster *cluster // nil without a Bus
}

// channel is one channel's presence.
type channel struct {
	name     string
	members  map[string]*member // by client id
	listed   int                // members with listed set
	watchers map[*Watcher]struct{}
}

// member is one client id's presence on a channel and the claims that keep it.
type member struct {
	m       *actionsyncv1.PresenceMember // immutable; replaced when the info changes
	order   uint64                       // when it joined, for listing
	listed  bool
	streams int                  // local streams joined with it
	grace   *time.Timer          // running after its last local stream ended
	remote  map[string]time.Time // node id → when that node's claim expires
}

func (m *member) present() bool { return m.streams > 0 || m.grace != nil || len(m.remote) > 0 }

// local reports whether this node holds a claim on m (a stream or its grace).
func (m *member) local() bool { return m.streams > 0 || m.grace != nil }

// New returns a Tracker. With opts.Bus set it joins the cluster on it; Close leaves it.
func New(opts Options) (*Tracker, error) {
	t := &Tracker{opts: opts.withDefaults(), channels: make(map[string]*channel)}
	if t.opts.Bus != nil {
		c, err := startCluster(t)
		if err != nil {
			return nil, err
		}
		t.cluster = c
	}
	return t, nil
}

// MaxMembers returns how many members are listed per channel.
func (t *Tracker) MaxMembers() int { return t.opts.MaxMembers }

// Close stops the grace timers and, with a Bus, tells the other nodes that this node's
// members go (they keep them for the grace period, time for their clients to reconnect
// elsewhere). Watchers get no more events. Close is idempotent.
func (t *Tracker) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	for _, ch := range t.channels {
		for _, m := range ch.members {
			if m.grace != nil {
				m.grace.Stop()
			}
		}
	}
	t.mu.Unlock()
	if t.cluster != nil {
		return t.cluster.stop()
	}
	return nil
}

// channelLocked returns the channel's state, created if missing.
func (t *Tracker) channelLocked(name string) *channel {
	ch := t.channels[name]
	if ch == nil {
		ch = &channel{name: name, members: make(map[string]*member), watchers: make(map[*Watcher]struct{})}
		t.channels[name] = ch
	}
	return ch
}

// dropIfEmptyLocked forgets a channel nobody is on or watching.
func (t *Tracker) dropIfEmptyLocked(ch *channel) {
	if len(ch.members) == 0 && len(ch.watchers) == 0 {
		delete(t.channels, ch.name)
	}
}

// Join makes m a member of channel for one local stream; the member is m.ClientId. Call
// leave when the stream ends: the member then stays for the grace period unless another
// stream joins with it meanwhile. A join with other info than the member has replaces
// it (watchers get a join again). leave is idempotent.
func (t *Tracker) Join(channel string, m *actionsyncv1.PresenceMember) (leave func()) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return func() {}
	}
	ch := t.channelLocked(channel)
	wasLocal := false
	if mem := ch.members[m.GetClientId()]; mem != nil {
		wasLocal = mem.local()
	}
	mem := t.claimLocked(ch, m)
	mem.streams++
	if mem.grace != nil {
		mem.grace.Stop()
		mem.grace = nil
	}
	if t.cluster != nil && (!wasLocal || mem.m == m) {
		t.cluster.announceJoin(channel, mem.m)
	}
	var once sync.Once
	return func() { once.Do(func() { t.leave(channel, mem) }) }
}

// Update replaces the info (and subject) of the member m.ClientId of channel, wherever
// its claims are (a stream here, its grace period, another node), without adding a
// claim: watchers get a join with m if it differs from what the member had, and the
// other nodes are told. It returns ErrNotMember if the client id is not present on the
// channel, and broker.ErrClosed after Close. A member's next stream that joins with
// other info replaces it again.
func (t *Tracker) Update(channel string, m *actionsyncv1.PresenceMember) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return broker.ErrClosed
	}
	ch := t.channels[channel]
	if ch == nil || ch.members[m.GetClientId()] == nil {
		return ErrNotMember
	}
	mem := t.claimLocked(ch, m)
	if t.cluster != nil && mem.m == m {
		// A node that holds a claim announces it with the new info, as on a join; one
		// that only knows the member from another node sends the info alone, so that it
		// adds no claim that would outlive the member's streams.
		if mem.local() {
			t.cluster.announceJoin(channel, m)
		} else {
			t.cluster.announceInfo(channel, m)
		}
	}
	return nil
}

// claimLocked returns ch's member for m's client id, adding it (and emitting its join)
// if it was not present, or replacing its info (and emitting a join again) if m's
// differs. The caller adds its claim.
func (t *Tracker) claimLocked(ch *channel, m *actionsyncv1.PresenceMember) *member {
	mem := ch.members[m.GetClientId()]
	if mem == nil {
		t.joins++
		mem = &member{m: m, order: t.joins}
		ch.members[m.GetClientId()] = mem
		if ch.listed < t.opts.MaxMembers {
			mem.listed = true
			ch.listed++
			t.emitLocked(ch, &actionsyncv1.PresenceEvent{Channel: ch.name, Join: m, Count: uint32(len(ch.members))})
		} else {
			t.emitLocked(ch, &actionsyncv1.PresenceEvent{Channel: ch.name, Count: uint32(len(ch.members))})
		}
		return mem
	}
	if !sameMember(mem.m, m) {
		mem.m = m
		if mem.listed {
			t.emitLocked(ch, &actionsyncv1.PresenceEvent{Channel: ch.name, Join: m, Count: uint32(len(ch.members))})
		}
	}
	return mem
}

// leave ends one local stream's claim on mem.
func (t *Tracker) leave(channel string, mem *member) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	ch := t.channels[channel]
	if ch == nil || ch.members[mem.m.GetClientId()] != mem {
		return
	}
	if mem.streams--; mem.streams > 0 {
		return
	}
	if t.opts.Grace <= 0 {
		t.endLocalLocked(ch, mem)
		return
	}
	var timer *time.Timer
	timer = time.AfterFunc(t.opts.Grace, func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		// A stream that joined meanwhile stopped this timer, and one that ended after it
		// started another: only the member's current timer ends its claim.
		if t.closed || mem.grace != timer || t.channels[channel] != ch || ch.members[mem.m.GetClientId()] != mem {
			return
		}
		mem.grace = nil
		t.endLocalLocked(ch, mem)
	})
	mem.grace = timer
}

// endLocalLocked drops this node's claim on mem (its streams and grace are over).
func (t *Tracker) endLocalLocked(ch *channel, mem *member) {
	if t.cluster != nil {
		t.cluster.announceLeave(ch.name, mem.m)
	}
	t.removeIfGoneLocked(ch, mem)
}

// removeIfGoneLocked removes mem from ch once no claim holds it, emitting its leave, and
// lists the earliest unlisted member in its place.
func (t *Tracker) removeIfGoneLocked(ch *channel, mem *member) {
	if mem.present() {
		return
	}
	delete(ch.members, mem.m.GetClientId())
	count := uint32(len(ch.members))
	if !mem.listed {
		t.emitLocked(ch, &actionsyncv1.PresenceEvent{Channel: ch.name, Count: count})
		t.dropIfEmptyLocked(ch)
		return
	}
	ch.listed--
	t.emitLocked(ch, &actionsyncv1.PresenceEvent{Channel: ch.name, Leave: mem.m, Count: count})
	if len(ch.members) > ch.listed {
		var next *member
		for _, m := range ch.members {
			if !m.listed && (next == nil || m.order < next.order) {
				next = m
			}
		}
		next.listed = true
		ch.listed++
		t.emitLocked(ch, &actionsyncv1.PresenceEvent{Channel: ch.name, Join: next.m, Count: count})
	}
	t.dropIfEmptyLocked(ch)
}

// sameMember reports whether a and b are the same member with the same info.
func sameMember(a, b *actionsyncv1.PresenceMember) bool {
	return a == b || (a.GetClientId() == b.GetClientId() && a.GetSubject() == b.GetSubject() && protoEqual(a.GetInfo(), b.GetInfo()))
}

// Get returns the channel's listed members, in join order, and how many members it has.
// The members must not be modified.
func (t *Tracker) Get(channel string) ([]*actionsyncv1.PresenceMember, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	ch := t.channels[channel]
	if ch == nil {
		return nil, 0
	}
	return ch.listedLocked(), len(ch.members)
}

// listedLocked returns the listed members in join order.
func (ch *channel) listedLocked() []*actionsyncv1.PresenceMember {
	listed := make([]*member, 0, ch.listed)
	for _, m := range ch.members {
		if m.listed {
			listed = append(listed, m)
		}
	}
	slices.SortFunc(listed, func(a, b *member) int { return cmpUint64(a.order, b.order) })
	out := make([]*actionsyncv1.PresenceMember, len(listed))
	for i, m := range listed {
		out[i] = m.m
	}
	return out
}

func cmpUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// emitLocked queues ev for every watcher of ch. The event is shared and must not be
// modified.
func (t *Tracker) emitLocked(ch *channel, ev *actionsyncv1.PresenceEvent) {
	for w := range ch.watchers {
		w.queueLocked(ev)
	}
}
