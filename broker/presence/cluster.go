package presence

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
)

// Bus carries presence messages between the nodes of a cluster: every message published
// reaches every node subscribed (the publisher's own subscription included; it skips its
// own), at most once, in the order each publisher sent them. Messages may be lost (a
// node that is cut off, a slow subscriber): the protocol repairs that with periodic
// announcements. A distributed backend implements it (jetstream: core NATS pub/sub).
type Bus interface {
	// Publish sends data to every node. It must not block for long: it is called from
	// one goroutine that every announcement of this node goes through.
	Publish(data []byte) error
	// Subscribe calls handle with every message until unsubscribe is called; handle is
	// called from one goroutine at a time.
	Subscribe(handle func(data []byte)) (unsubscribe func() error, err error)
}

// How nodes share presence. Each node announces its own claims only (members with a
// local stream or in their grace period): a join when it takes a claim (or a member's
// info changes), a leave when it drops one, and every Refresh all of them, per channel.
// A node keeps another node's claim until 3 × that node's Refresh after its last
// announcement (the announcement says how long: ttl), so a node that dies or is cut off
// has its members leave everywhere else within 3 × Refresh plus one sweep (Refresh/4). A
// node that starts says hello; the others answer with a refresh at once, so it knows the
// cluster's members within a round trip. A node that closes says bye: the others keep
// its claims for its grace period only, time for its clients to reconnect elsewhere
// without a leave and a join. A node where a member's info is updated (UpdatePresence)
// announces a join if it holds a claim on the member, and otherwise an info message,
// which replaces the member's info where it is present and adds no claim (nodes that do
// not know the op ignore it).
const (
	opHello   = "hello"
	opJoin    = "join"
	opLeave   = "leave"
	opRefresh = "refresh"
	opBye     = "bye"
	opInfo    = "info"

	// ttlRefreshes is how many refresh intervals another node's claim lives unrenewed.
	ttlRefreshes = 3
	// maxMessageBytes bounds one refresh message (NATS's default max payload is 1 MiB).
	maxMessageBytes = 64 << 10
	// outboxSize bounds the announcements waiting to be published; past it they are
	// dropped and the next refresh repairs what they would have said.
	outboxSize = 4096
)

// wireMessage is one presence message on the Bus, in JSON.
type wireMessage struct {
	Node    string       `json:"node"`
	Op      string       `json:"op"`
	Channel string       `json:"ch,omitempty"`
	Members []wireMember `json:"m,omitempty"`
	// TTLMillis is how long the receivers keep the claims of a join or refresh; for bye,
	// how long they keep this node's claims from now.
	TTLMillis int64 `json:"ttl,omitempty"`
}

// wireMember is a member on the wire; Info is its google.protobuf.Struct, encoded.
type wireMember struct {
	ClientID string `json:"id"`
	Subject  string `json:"sub,omitempty"`
	Info     []byte `json:"info,omitempty"`
}

// cluster is a Tracker's part in the cluster on its Bus.
type cluster struct {
	t       *Tracker
	node    string
	outbox  chan []byte
	refresh chan struct{} // asks for a refresh now (capacity 1)
	done    chan struct{}
	wg      sync.WaitGroup
	unsub   func() error
}

// startCluster subscribes t to its Bus, says hello, and starts announcing and sweeping.
func startCluster(t *Tracker) (*cluster, error) {
	var id [8]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("presence node id: %w", err)
	}
	c := &cluster{t: t, node: hex.EncodeToString(id[:]), outbox: make(chan []byte, outboxSize),
		refresh: make(chan struct{}, 1), done: make(chan struct{})}
	unsub, err := t.opts.Bus.Subscribe(c.receive)
	if err != nil {
		return nil, fmt.Errorf("subscribe to presence: %w", err)
	}
	c.unsub = unsub
	c.wg.Add(2)
	go c.publishLoop()
	go c.tickLoop()
	c.send(wireMessage{Op: opHello})
	return c, nil
}

// stop says bye and stops the cluster's goroutines, after publishing what is queued.
func (c *cluster) stop() error {
	c.send(wireMessage{Op: opBye, TTLMillis: c.t.opts.Grace.Milliseconds()})
	close(c.done)
	c.wg.Wait()
	return c.unsub()
}

// send queues msg for publishing, or drops it if the outbox is full.
func (c *cluster) send(msg wireMessage) {
	msg.Node = c.node
	data, err := json.Marshal(msg)
	if err != nil {
		return // only plain strings and bytes: cannot fail
	}
	select {
	case c.outbox <- data:
	default:
	}
}

func (c *cluster) ttl() int64 { return (ttlRefreshes * c.t.opts.Refresh).Milliseconds() }

// announceJoin tells the other nodes this node claims m on channel (t.mu held).
func (c *cluster) announceJoin(channel string, m *actionsyncv1.PresenceMember) {
	c.send(wireMessage{Op: opJoin, Channel: channel, Members: []wireMember{toWire(m)}, TTLMillis: c.ttl()})
}

// announceLeave tells the other nodes this node dropped its claim on m (t.mu held).
func (c *cluster) announceLeave(channel string, m *actionsyncv1.PresenceMember) {
	c.send(wireMessage{Op: opLeave, Channel: channel, Members: []wireMember{{ClientID: m.GetClientId()}}})
}

// announceInfo tells the other nodes m's new info, without a claim (t.mu held).
func (c *cluster) announceInfo(channel string, m *actionsyncv1.PresenceMember) {
	c.send(wireMessage{Op: opInfo, Channel: channel, Members: []wireMember{toWire(m)}})
}

func toWire(m *actionsyncv1.PresenceMember) wireMember {
	w := wireMember{ClientID: m.GetClientId(), Subject: m.GetSubject()}
	if m.GetInfo() != nil {
		w.Info, _ = proto.MarshalOptions{Deterministic: true}.Marshal(m.GetInfo())
	}
	return w
}

func fromWire(w wireMember) (*actionsyncv1.PresenceMember, error) {
	m := &actionsyncv1.PresenceMember{ClientId: w.ClientID, Subject: w.Subject}
	if len(w.Info) > 0 {
		m.Info = &structpb.Struct{}
		if err := proto.Unmarshal(w.Info, m.Info); err != nil {
			return nil, err
		}
	}
	return m, nil
}

// publishLoop publishes the outbox in order until stop, then what is left in it.
func (c *cluster) publishLoop() {
	defer c.wg.Done()
	for {
		select {
		case data := <-c.outbox:
			_ = c.t.opts.Bus.Publish(data) // a lost message is repaired by the next refresh or expiry
		case <-c.done:
			for {
				select {
				case data := <-c.outbox:
					_ = c.t.opts.Bus.Publish(data)
				default:
					return
				}
			}
		}
	}
}

// tickLoop refreshes this node's claims every Refresh (and when another node says
// hello) and sweeps expired claims of other nodes every Refresh/4.
func (c *cluster) tickLoop() {
	defer c.wg.Done()
	refresh := time.NewTicker(c.t.opts.Refresh)
	defer refresh.Stop()
	sweep := time.NewTicker(c.t.opts.Refresh / 4)
	defer sweep.Stop()
	for {
		select {
		case <-refresh.C:
			c.announceAll()
		case <-c.refresh:
			c.announceAll()
		case <-sweep.C:
			c.sweep()
		case <-c.done:
			return
		}
	}
}

// announceAll sends a refresh of every local claim, per channel, in messages of at most
// maxMessageBytes.
func (c *cluster) announceAll() {
	t := c.t
	t.mu.Lock()
	var msgs []wireMessage
	for _, ch := range t.channels {
		msg, size := wireMessage{Op: opRefresh, Channel: ch.name, TTLMillis: c.ttl()}, 0
		for _, mem := range ch.members {
			if !mem.local() {
				continue
			}
			w := toWire(mem.m)
			// JSON carries Info in base64: count it twice, with room for the keys.
			n := len(w.ClientID) + len(w.Subject) + 2*len(w.Info) + 32
			if size+n > maxMessageBytes && len(msg.Members) > 0 {
				msgs = append(msgs, msg)
				msg.Members, size = nil, 0
			}
			size += n
			msg.Members = append(msg.Members, w)
		}
		if len(msg.Members) > 0 {
			msgs = append(msgs, msg)
		}
	}
	t.mu.Unlock()
	for _, m := range msgs {
		c.send(m)
	}
}

// sweep drops the claims of other nodes that expired.
func (c *cluster) sweep() {
	t := c.t
	now := t.opts.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	for _, ch := range t.channels {
		for _, mem := range ch.members {
			for node, exp := range mem.remote {
				if now.After(exp) {
					delete(mem.remote, node)
				}
			}
			t.removeIfGoneLocked(ch, mem)
		}
	}
}

// receive applies another node's message.
func (c *cluster) receive(data []byte) {
	var msg wireMessage
	if err := json.Unmarshal(data, &msg); err != nil || msg.Node == c.node {
		return
	}
	t := c.t
	if msg.Op == opHello {
		select {
		case c.refresh <- struct{}{}:
		default:
		}
		return
	}
	members := make([]*actionsyncv1.PresenceMember, 0, len(msg.Members))
	for _, w := range msg.Members {
		m, err := fromWire(w)
		if err != nil || m.GetClientId() == "" {
			continue
		}
		members = append(members, m)
	}
	now := t.opts.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed {
		return
	}
	switch msg.Op {
	case opJoin, opRefresh:
		if len(members) == 0 {
			return
		}
		ch := t.channelLocked(msg.Channel)
		exp := now.Add(time.Duration(msg.TTLMillis) * time.Millisecond)
		for _, m := range members {
			// A refresh adds a claim but does not change a member's info: only joins do,
			// so that two nodes holding one member with old and new info (a client that
			// moved within the grace period) do not flip it back and forth.
			mem := ch.members[m.GetClientId()]
			if mem == nil || msg.Op == opJoin {
				mem = t.claimLocked(ch, m)
			}
			if mem.remote == nil {
				mem.remote = make(map[string]time.Time, 1)
			}
			mem.remote[msg.Node] = exp
		}
	case opInfo:
		ch := t.channels[msg.Channel]
		if ch == nil {
			return
		}
		for _, m := range members {
			// Only a member present here changes: an info message is no claim.
			if ch.members[m.GetClientId()] != nil {
				t.claimLocked(ch, m)
			}
		}
	case opLeave:
		ch := t.channels[msg.Channel]
		if ch == nil {
			return
		}
		for _, m := range members {
			if mem := ch.members[m.GetClientId()]; mem != nil {
				delete(mem.remote, msg.Node)
				t.removeIfGoneLocked(ch, mem)
			}
		}
	case opBye:
		until := now.Add(time.Duration(msg.TTLMillis) * time.Millisecond)
		for _, ch := range t.channels {
			for _, mem := range ch.members {
				if exp, ok := mem.remote[msg.Node]; ok && exp.After(until) {
					mem.remote[msg.Node] = until
				}
			}
		}
	}
}
