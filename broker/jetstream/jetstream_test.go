package jetstream_test

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/actionsync/actionsync/broker"
	"github.com/actionsync/actionsync/broker/brokertest"
	"github.com/actionsync/actionsync/broker/jetstream"
	"github.com/actionsync/actionsync/broker/jetstream/embedded"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// startServer starts an embedded nats-server with JetStream on a random loopback port,
// its file store in a temp dir, stopped when t ends.
func startServer(t testing.TB) *embedded.Server {
	t.Helper()
	srv, err := embedded.Start(embedded.Config{DataDir: t.TempDir(), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	return srv
}

// connect returns a connection to srv with the broker's options, closed when t ends.
func connect(t testing.TB, srv *embedded.Server) *nats.Conn {
	t.Helper()
	nc, err := srv.Connect(jetstream.ConnectOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// streamSeq numbers the streams of the suite, which share one server.
var streamSeq atomic.Int64

func TestBroker_Conformance(t *testing.T) {
	srv := startServer(t)
	nc := connect(t, srv)
	brokertest.Run(t, func(t *testing.T, cfg brokertest.Config) broker.Broker {
		n := streamSeq.Add(1)
		b, err := jetstream.New(t.Context(), nc, jetstream.Options{
			Stream:        fmt.Sprintf("T%d", n),
			SubjectPrefix: fmt.Sprintf("t%d", n),
			HistorySize:   cfg.HistorySize,
			QueueSize:     cfg.QueueSize,
			MaxAge:        cfg.MaxAge,
			Now:           cfg.Now,

			MaxSnapshotBytes: cfg.MaxSnapshotBytes,
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	})
}
