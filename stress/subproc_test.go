package stress

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"testing"
	"time"

	"connectrpc.com/connect"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// runSubscriberProcess is the test binary as a subscriber process of the server at url:
// it follows channel live over h2c, prints "ready" once the stream is live, and reads
// until it is killed. Scenarios stop it (SIGSTOP) as a backgrounded phone would be.
func runSubscriberProcess(url, channel string) int {
	c := actionsyncv1connect.NewSyncServiceClient(newConns(nil, 0, 0).hc, url)
	s, err := c.Subscribe(context.Background(), connect.NewRequest(&actionsyncv1.SubscribeRequest{
		Positions: []*actionsyncv1.Position{{Channel: channel, Live: true}}}))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for s.Receive() {
		if s.Msg().GetReady() != nil {
			fmt.Println("ready")
		}
	}
	fmt.Fprintln(os.Stderr, s.Err())
	return 1
}

// startSubscriberProcess starts a subscriber process following channel and waits until
// its stream is live. It is killed when t ends.
func startSubscriberProcess(t *testing.T, url, channel string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), subscriberEnv+"="+url, "STRESS_SUBSCRIBER_CHANNEL="+channel)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	ready := make(chan bool, 1)
	go func() {
		sc := bufio.NewScanner(out)
		ready <- sc.Scan() && sc.Text() == "ready"
	}()
	select {
	case ok := <-ready:
		if !ok {
			t.Fatal("subscriber process: no ready")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("subscriber process: not ready after 10s")
	}
	return cmd
}
