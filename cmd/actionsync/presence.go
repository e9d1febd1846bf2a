package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/presence"
	"github.com/actionsync/actionsync/service"
)

// presenceSettings are the settings of presence: who is on a channel.
var presenceSettings = []setting{
	{flag: "presence-grace", env: "ACTIONSYNC_PRESENCE_GRACE", def: "5s", arg: "DURATION",
		help: "a member whose streams ended stays present this long: a client that subscribes again within it causes no leave and no join; 0: leave at once",
		apply: durationAtLeast(0, func(c *config, d time.Duration) {
			c.service.PresenceOptions.Grace = zeroAs(d, -1)
		})},
	{flag: "max-presence-members", env: "ACTIONSYNC_MAX_PRESENCE_MEMBERS", def: "100", arg: "N",
		help:  "members listed per channel in presence snapshots and GetPresence (those that joined first); counts cover every member",
		apply: intAtLeast(1, func(c *config) *int { return &c.service.PresenceOptions.MaxMembers })},
	{flag: "max-presence-info-bytes", env: "ACTIONSYNC_MAX_PRESENCE_INFO_BYTES", def: "256", arg: "BYTES",
		help:  "largest presence info a subscriber may show (protobuf size); KiB suffix",
		apply: bytesAtLeast(1, func(c *config) *int { return &c.service.Limits.MaxPresenceInfoBytes })},
	{flag: "presence-refresh", env: "ACTIONSYNC_PRESENCE_REFRESH", def: "3s", arg: "DURATION",
		help: "on NATS: how often a node announces its members to the others; the members of a node that stops (or loses NATS) leave elsewhere within 3.25 times this",
		apply: durationAtLeast(10*time.Millisecond, func(c *config, d time.Duration) {
			c.service.PresenceOptions.Refresh = d
		})},
}

// presenceBus is implemented by brokers whose nodes share presence (jetstream).
type presenceBus interface {
	PresenceBus() presence.Bus
}

// sharePresence gives opts a presence tracker shared with the other nodes when b has a
// bus, and returns the broker's cleanup extended to close it first (its goodbye goes out
// before the connection closes). On one node the service makes its own tracker.
func sharePresence(b broker.Broker, opts *service.Options, closeBroker func() error) (func() error, error) {
	pb, ok := b.(presenceBus)
	if !ok {
		return closeBroker, nil
	}
	po := opts.PresenceOptions
	po.Bus = pb.PresenceBus()
	tr, err := presence.New(po)
	if err != nil {
		return closeBroker, fmt.Errorf("start presence: %w", err)
	}
	opts.Presence = tr
	return func() error { return errors.Join(tr.Close(), closeBroker()) }, nil
}
