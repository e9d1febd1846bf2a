package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/memory"
)

// newBroker builds the broker backend cfg chooses. The cleanup function closes the
// broker and then whatever it runs on; call it once the service no longer uses the
// broker.
func newBroker(_ context.Context, cfg config, _ *slog.Logger) (broker.Broker, func() error, error) {
	b := memory.New(memory.Options{
		HistorySize: cfg.storage.historySize,
		MaxAge:      noLimitAsNegative(cfg.storage.maxAge),
		QueueSize:   cfg.storage.queueSize,
		MaxChannels: cfg.storage.maxChannels,
	})
	return b, b.Close, nil
}

// noLimitAsNegative converts a max age where 0 means no limit (the command line's
// convention) to the backends' convention, where 0 means the default and a negative
// value no limit.
func noLimitAsNegative(maxAge time.Duration) time.Duration {
	return zeroAs(maxAge, -1)
}
