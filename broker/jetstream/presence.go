package jetstream

import (
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/actionsync/actionsync/broker/presence"
)

// PresenceBus returns the presence.Bus of the nodes that share this broker's stream:
// core NATS publish/subscribe on the broker's connection, subject PresenceSubject(). Not
// JetStream: presence is ephemeral, and the presence protocol repairs lost messages by
// itself (periodic announcements that expire), so nothing of it is stored.
func (b *Broker) PresenceBus() presence.Bus {
	return natsBus{nc: b.nc, subject: b.PresenceSubject()}
}

// PresenceSubject is the NATS subject presence messages travel on: the subject prefix
// with "-presence" appended to its last token ("actionsync.ch-presence" by default), so
// that the stream, which takes "<prefix>.>", never stores them, and nodes of another
// stream or prefix on the same NATS do not see them.
func (b *Broker) PresenceSubject() string { return b.opts.SubjectPrefix + "-presence" }

// natsBus is a presence.Bus over core NATS.
type natsBus struct {
	nc      *nats.Conn
	subject string
}

var _ presence.Bus = natsBus{}

// Publish implements presence.Bus. It does not block: nats.go buffers the message (or
// fails at once while disconnected, with the broker's connection options).
func (n natsBus) Publish(data []byte) error {
	if err := n.nc.Publish(n.subject, data); err != nil {
		return fmt.Errorf("publish presence: %w", err)
	}
	return nil
}

// Subscribe implements presence.Bus; nats.go calls handle from one goroutine.
func (n natsBus) Subscribe(handle func(data []byte)) (func() error, error) {
	sub, err := n.nc.Subscribe(n.subject, func(m *nats.Msg) { handle(m.Data) })
	if err != nil {
		return nil, fmt.Errorf("subscribe to %s: %w", n.subject, err)
	}
	return sub.Unsubscribe, nil
}
