package stress

import (
	"flag"
	"fmt"
	"hash/fnv"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The suite's settings, from flags or their environment variables (a flag wins).
var (
	enabled  = flag.Bool("stress", os.Getenv("STRESS") == "1", "run the stress suite (env STRESS=1)")
	seedFlag = flag.Uint64("stress.seed", envUint("STRESS_SEED", uint64(time.Now().UnixNano())), "seed of every random choice (env STRESS_SEED; default: the clock)")
	duration = flag.Duration("stress.duration", envDuration("STRESS_DURATION", 20*time.Second), "how long each scenario runs its load (env STRESS_DURATION)")
)

// serverBinary is the actionsync binary the scenarios run, and natsBinary the
// nats-server of the process faults (the version go.mod requires), built once by
// TestMain.
var serverBinary, natsBinary string

// subscriberEnv makes the test binary a subscriber process (see runSubscriberProcess),
// which the scenarios stop with SIGSTOP as a backgrounded phone would be.
const subscriberEnv = "STRESS_SUBSCRIBER_URL"

func TestMain(m *testing.M) {
	if url := os.Getenv(subscriberEnv); url != "" {
		os.Exit(runSubscriberProcess(url, os.Getenv("STRESS_SUBSCRIBER_CHANNEL")))
	}
	flag.Parse()
	if !*enabled {
		// go test ./... runs this package too: without STRESS=1 every test skips.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "actionsync-stress-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	serverBinary, natsBinary = filepath.Join(dir, "actionsync"), filepath.Join(dir, "nats-server")
	for bin, pkg := range map[string]string{serverBinary: "github.com/actionsync/actionsync/cmd/actionsync", natsBinary: "github.com/nats-io/nats-server/v2"} {
		build := exec.Command("go", "build", "-o", bin, pkg)
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "stress: build %s: %v\n", pkg, err)
			os.Exit(1)
		}
	}
	fmt.Printf("stress: seed %d, duration %v (STRESS_SEED=%d STRESS_DURATION=%v)\n", *seedFlag, *duration, *seedFlag, *duration)
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

func envUint(name string, def uint64) uint64 {
	if v, err := strconv.ParseUint(os.Getenv(name), 10, 64); err == nil {
		return v
	}
	return def
}

func envDuration(name string, def time.Duration) time.Duration {
	if v, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return v
	}
	return def
}

// scenario is one scenario's run: its seed, its load duration, its PRNGs and its
// figures.
type scenario struct {
	t        *testing.T
	name     string
	seed     uint64
	duration time.Duration

	mu      sync.Mutex
	figures []string
	streams uint64 // PRNG streams handed out
}

// begin starts a scenario: it skips unless the suite is enabled, and on failure prints
// the command that repeats the scenario's random choices. Its figures are logged at the
// end, passed or failed.
func begin(t *testing.T) *scenario {
	t.Helper()
	if !*enabled {
		t.Skip("the stress suite runs with STRESS=1 (see docs/reliability.md)")
	}
	s := &scenario{t: t, name: t.Name(), seed: *seedFlag, duration: *duration}
	t.Cleanup(func() {
		if t.Skipped() {
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		var b strings.Builder
		fmt.Fprintf(&b, "%s figures (seed %d, duration %v):\n", s.name, s.seed, s.duration)
		for _, f := range s.figures {
			fmt.Fprintf(&b, "    %s\n", f)
		}
		fmt.Print(b.String())
		if t.Failed() {
			fmt.Printf("%s FAILED; repeat its random choices with:\n    STRESS=1 STRESS_SEED=%d STRESS_DURATION=%v go test -count=1 -run '^%s$' ./stress/\n",
				s.name, s.seed, s.duration, s.name)
		}
	})
	return s
}

// rng returns a new PRNG of the scenario: the n-th one handed out of a scenario is the
// same in every run with the same seed, so every goroutine that makes random choices
// takes its own.
func (s *scenario) rng() *rand.Rand {
	s.mu.Lock()
	n := s.streams
	s.streams++
	s.mu.Unlock()
	h := fnv.New64a()
	h.Write([]byte(s.name))
	return rand.New(rand.NewPCG(s.seed^h.Sum64(), n))
}

// figure records one line of the scenario's figures.
func (s *scenario) figure(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.figures = append(s.figures, fmt.Sprintf(format, args...))
}

// scaled returns n times the scenario's duration over 20 s, at least lo: loads that the
// short CI form runs smaller and the long form larger.
func (s *scenario) scaled(n int, lo int) int {
	return max(lo, int(float64(n)*s.duration.Seconds()/20))
}
