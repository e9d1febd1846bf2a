package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	natsjs "github.com/nats-io/nats.go/jetstream"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/jetstream"
	"github.com/actionsync/actionsync/broker/jetstream/embedded"
	"github.com/actionsync/actionsync/broker/memory"
)

// Start-up bounds of the NATS backends: NATS that does not answer fails the start-up
// instead of hanging it.
const (
	natsConnectTimeout = 5 * time.Second  // dialling and greeting one NATS server
	natsStartTimeout   = 30 * time.Second // creating or updating the stream
	natsReadyTry       = 2 * time.Second  // one request of waitJetStream
	natsStartTry       = 5 * time.Second  // one attempt at creating the streams and the feed
)

// newBroker builds the broker backend cfg.backend names. onStatus follows the NATS
// backends' connection (false: lost, true: back); the memory backend never calls it.
//
// The cleanup function closes the broker, then what it runs on: the NATS connection,
// then the embedded NATS server, whose shutdown flushes its file store and unlocks the
// data directory. Call it once, after the service stopped using the broker: the broker's
// Close waits for the publishes under way, so every acknowledged action is stored
// before the connection closes.
func newBroker(ctx context.Context, cfg config, logger *slog.Logger, onStatus func(available bool)) (broker.Broker, func() error, error) {
	switch cfg.backend {
	case backendNATS:
		nc, err := connectNATS(cfg.nats, logger)
		if err != nil {
			return nil, nil, err
		}
		b, err := newJetStream(ctx, nc, cfg, logger, onStatus)
		if err != nil {
			nc.Close()
			return nil, nil, err
		}
		logger.Info("actionsync broker on NATS", "nats_url", nc.ConnectedUrlRedacted(), "stream", cfg.nats.stream)
		return b, func() error { return closeJetStream(b, nc) }, nil

	case backendEmbedded:
		srv, err := embedded.Start(embedded.Config{DataDir: cfg.nats.dataDir, Listen: cfg.nats.listen})
		if err != nil {
			return nil, nil, fmt.Errorf("start embedded NATS on --data-dir: %w", err)
		}
		nc, err := srv.Connect(append(jetstream.ConnectOptions(), natsErrorHandler(logger))...)
		if err != nil {
			srv.Shutdown()
			return nil, nil, fmt.Errorf("connect to embedded NATS: %w", err)
		}
		b, err := newJetStream(ctx, nc, cfg, logger, onStatus)
		if err != nil {
			nc.Close()
			srv.Shutdown()
			return nil, nil, err
		}
		attrs := []any{"data_dir", cfg.nats.dataDir, "stream", cfg.nats.stream}
		if u := srv.ClientURL(); u != "" {
			attrs = append(attrs, "nats_url", u)
		}
		logger.Info("actionsync broker on embedded NATS", attrs...)
		return b, func() error {
			err := closeJetStream(b, nc)
			srv.Shutdown()
			return err
		}, nil

	default:
		b := memory.New(memory.Options{
			HistorySize: cfg.storage.historySize,
			MaxAge:      noLimitAsNegative(cfg.storage.maxAge),

			MaxSnapshotBytes:       cfg.storage.maxSnapshotBytes,
			MaxHistoryBytes:        int64(cfg.storage.maxHistoryBytes),
			MaxChannelHistoryBytes: cfg.storage.maxChannelHistoryBytes,
			QueueSize:              cfg.storage.queueSize,
			MaxChannels:            cfg.storage.maxChannels,
		})
		return b, b.Close, nil
	}
}

// closeJetStream closes b, then its connection nc.
func closeJetStream(b *jetstream.Broker, nc *nats.Conn) error {
	if !nc.IsConnected() {
		// NATS is unreachable: the broker's requests on the connection would each wait
		// out their timeout, delaying the exit by seconds. Closing the connection first
		// fails them at once, and loses nothing: every acknowledged action is stored in
		// JetStream, and no publish can be acknowledged over a dead connection.
		nc.Close()
	}
	err := b.Close()
	nc.Close()
	return err
}

// connectNATS connects to the NATS servers of --nats-url with the broker's connection
// options plus credentials and TLS. It fails, rather than waits, when no server answers.
func connectNATS(n natsConfig, logger *slog.Logger) (*nats.Conn, error) {
	opts := append(jetstream.ConnectOptions(), nats.Timeout(natsConnectTimeout), natsErrorHandler(logger))
	if n.credsFile != "" {
		opts = append(opts, nats.UserCredentials(n.credsFile))
	}
	if n.tlsCAFile != "" {
		opts = append(opts, nats.RootCAs(n.tlsCAFile))
	}
	if n.tlsCertFile != "" {
		opts = append(opts, nats.ClientCert(n.tlsCertFile, n.tlsKeyFile))
	}
	nc, err := nats.Connect(strings.Join(n.urls, ","), opts...)
	if err != nil {
		return nil, fmt.Errorf("connect to NATS at %s: %w", redactURLs(strings.Join(n.urls, ",")), err)
	}
	return nc, nil
}

// natsErrorHandler logs the errors NATS reports asynchronously (permissions, slow
// consumers), which would otherwise go unseen.
func natsErrorHandler(logger *slog.Logger) nats.Option {
	return nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
		if sub != nil {
			logger.Warn("NATS error", "subject", sub.Subject, "error", err)
			return
		}
		logger.Warn("NATS error", "error", err)
	})
}

// newJetStream starts the JetStream broker on nc with the storage and NATS sections of
// cfg, within natsStartTimeout.
func newJetStream(ctx context.Context, nc *nats.Conn, cfg config, logger *slog.Logger, onStatus func(bool)) (*jetstream.Broker, error) {
	ctx, cancel := context.WithTimeout(ctx, natsStartTimeout)
	defer cancel()
	opts := jetstream.Options{
		Stream:        cfg.nats.stream,
		SubjectPrefix: cfg.nats.subjectPrefix,
		Replicas:      cfg.nats.replicas,
		HistorySize:   cfg.storage.historySize,
		MaxAge:        noLimitAsNegative(cfg.storage.maxAge),

		MaxSnapshotBytes:       cfg.storage.maxSnapshotBytes,
		MaxChannelHistoryBytes: cfg.storage.maxChannelHistoryBytes,
		QueueSize:              cfg.storage.queueSize,
		MaxChannels:            cfg.storage.maxChannels,
		PublishTimeout:         cfg.nats.publishTimeout,
		OnStatus:               onStatus,
		Logger:                 logger,
	}
	if err := waitJetStream(ctx, nc, logger); err != nil {
		return nil, fmt.Errorf("start JetStream broker: %w", err)
	}
	// A JetStream cluster that starts with us may not have elected its meta leader
	// yet, and a request may go unanswered: try again until the start-up deadline.
	b, err := retryStart(ctx, natsStartTry, logger, func(ctx context.Context) (*jetstream.Broker, error) {
		return jetstream.New(ctx, nc, opts)
	})
	if err != nil {
		return nil, fmt.Errorf("start JetStream broker: %w", err)
	}
	return b, nil
}

// retryStart calls start until it succeeds, fails with an error that will not go away
// (transientJetStreamError), or ctx ends. Each call gets at most try: a JetStream request
// can go unanswered (the stress suite saw a second node's stream creation get no answer
// for its whole 30 s start-up deadline), and one such request must not take the time the
// next attempts need. start must not keep its context past its return (jetstream.New
// does not: the broker's own work runs on a context of its own).
func retryStart[T any](ctx context.Context, try time.Duration, logger *slog.Logger, start func(context.Context) (T, error)) (T, error) {
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		tryCtx, cancel := context.WithTimeout(ctx, try)
		v, err := start(tryCtx)
		cancel()
		if err == nil {
			return v, nil
		}
		if !transientJetStreamError(err) || ctx.Err() != nil {
			return v, err
		}
		logger.Warn("JetStream not ready; trying again", "error", err, "in", delay)
		select {
		case <-ctx.Done():
			return v, err
		case <-time.After(delay):
		}
	}
}

// waitJetStream returns once JetStream answers a request (its account info) on nc, or
// answers with an error that will not go away (JetStream not enabled: the broker's start
// reports it), or with the last error when ctx ends. Each try is bounded by
// natsReadyTry: a request sent before a starting cluster has elected its meta leader is
// never answered, not even with a 503, and a first stream creation sent then would wait
// out the whole start-up deadline, leaving no time to try again.
func waitJetStream(ctx context.Context, nc *nats.Conn, logger *slog.Logger) error {
	js, err := natsjs.New(nc)
	if err != nil {
		return err
	}
	for {
		tryCtx, cancel := context.WithTimeout(ctx, natsReadyTry)
		_, err := js.AccountInfo(tryCtx)
		cancel()
		if err == nil || !transientJetStreamError(err) {
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("JetStream not answering: %w", err)
		}
		logger.Warn("JetStream not answering yet; trying again", "error", err)
		select { // an error that came at once (no responders) is not retried in a spin
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// noLimitAsNegative converts a max age where 0 means no limit (the command line's
// convention) to the backends' convention, where 0 means the default and a negative
// value no limit.
func noLimitAsNegative(maxAge time.Duration) time.Duration {
	return zeroAs(maxAge, -1)
}

// transientJetStreamError reports whether a JetStream API error may go away by itself: a
// timeout, no responder yet, or a 5xx answer (a cluster without a meta leader answers
// 503). A refused stream configuration does not.
func transientJetStreamError(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, nats.ErrTimeout) {
		return true
	}
	var apiErr *natsjs.APIError
	return errors.As(err, &apiErr) && apiErr.Code >= 500
}
