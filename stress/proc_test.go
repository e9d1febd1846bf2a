package stress

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"connectrpc.com/connect"

	actionsyncv1 "github.com/actionsync/actionsync/gen/actionsync/v1"
	"github.com/actionsync/actionsync/gen/actionsync/v1/actionsyncv1connect"
)

// This file runs `actionsync serve` processes: start, signal, kill, restart on the same
// address, and read their figures from the AdminService and the pprof listener.

var (
	listeningLine = regexp.MustCompile(`msg="actionsync listening".* url=(\S+)`)
	sideLine      = regexp.MustCompile(`msg="actionsync (admin|debug) listener" addr=(\S+)`)
)

// logTail is how many of a process's last log lines are kept to show on failure.
const logTail = 300

// proc is one `actionsync serve` process.
type proc struct {
	t    *testing.T
	name string
	args []string // as given to startProc, without the addresses
	addr string   // host:port it serves on (kept across restarts)
	url  string

	admin, debug string // host:port of its AdminService and pprof listeners

	cmd  *exec.Cmd
	done chan struct{} // closed once it exited and its log is read
	err  error         // what Wait returned, set before done closes

	mu     sync.Mutex
	tail   []string       // the last logTail lines of its log
	counts map[string]int // lines containing each watched fragment
}

// watched are the log fragments every process counts: a data race or a panic in the
// server fails the scenario that caused it; netHTTPLine counts net/http's error lines.
var watched = []string{"WARNING: DATA RACE", "panic:", "level=ERROR", "resets requests in a loop", netHTTPLine}

// netHTTPLine starts every line of net/http's error log (a failed TLS handshake, a bad
// HTTP/2 preface) in the server's log.
const netHTTPLine = `level=WARN msg="http`

// startProc starts `actionsync serve` with args plus its listeners on loopback, and
// returns once it listens. It is killed, if still running, when t ends.
func startProc(t *testing.T, name string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, args: args, addr: "127.0.0.1:0"}
	p.start()
	t.Cleanup(func() {
		p.kill()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, w := range watched[:2] {
			if p.counts[w] > 0 {
				t.Errorf("%s logged %q %d times; its last lines:\n%s", p.name, w, p.counts[w], strings.Join(p.tail, "\n"))
			}
		}
	})
	return p
}

// start runs the process on p.addr and waits until it listens.
func (p *proc) start() {
	p.t.Helper()
	argv := append([]string{"serve", "--addr", p.addr, "--admin-addr", "127.0.0.1:0", "--debug-addr", "127.0.0.1:0", "--demo=false"}, p.args...)
	p.cmd = exec.Command(serverBinary, argv...)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "ACTIONSYNC_") && !strings.HasPrefix(kv, "STRESS") {
			p.cmd.Env = append(p.cmd.Env, kv)
		}
	}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	p.done = make(chan struct{})
	p.mu.Lock()
	if p.counts == nil {
		p.counts = map[string]int{}
	}
	p.mu.Unlock()
	if err := p.cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	listening := make(chan string, 1)
	done := p.done
	go func() {
		sc := bufio.NewScanner(stderr)
		sc.Buffer(nil, 1<<20)
		for sc.Scan() {
			p.line(sc.Text(), listening)
		}
		_, _ = io.Copy(io.Discard, stderr)
		p.err = p.cmd.Wait()
		close(done)
	}()
	select {
	case p.url = <-listening:
		p.addr = strings.TrimPrefix(strings.TrimPrefix(p.url, "http://"), "https://") // https: with --tls-cert
	case <-done:
		p.t.Fatalf("%s exited before listening: %v\n%s", p.name, p.err, p.logs())
	case <-time.After(60 * time.Second):
		_ = p.cmd.Process.Kill()
		p.t.Fatalf("%s not listening after 60s:\n%s", p.name, p.logs())
	}
}

// line takes one line of the process's log.
func (p *proc) line(l string, listening chan<- string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.tail) == logTail {
		copy(p.tail, p.tail[1:])
		p.tail = p.tail[:logTail-1]
	}
	p.tail = append(p.tail, l)
	for _, w := range watched {
		if strings.Contains(l, w) {
			p.counts[w]++
		}
	}
	if m := sideLine.FindStringSubmatch(l); m != nil {
		if m[1] == "admin" {
			p.admin = m[2]
		} else {
			p.debug = m[2]
		}
	}
	if m := listeningLine.FindStringSubmatch(l); m != nil {
		listening <- m[1]
	}
}

// logs returns the last lines the process logged.
func (p *proc) logs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// count returns how many lines logged so far contained fragment, one of watched.
func (p *proc) count(fragment string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[fragment]
}

// exited reports whether the process has exited.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// signal sends sig to the process.
func (p *proc) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		p.t.Fatalf("%s: %v: %v", p.name, sig, err)
	}
}

// wait waits up to within for the process to exit and returns what it exited with.
func (p *proc) wait(within time.Duration) (error, bool) {
	select {
	case <-p.done:
		return p.err, true
	case <-time.After(within):
		return nil, false
	}
}

// kill sends SIGKILL unless the process has exited, and waits until it has.
func (p *proc) kill() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGCONT) // a stopped process dies only once continued
	_ = p.cmd.Process.Kill()
	if _, ok := p.wait(10 * time.Second); !ok {
		p.t.Errorf("%s still running 10s after SIGKILL", p.name)
	}
}

// restart starts the process again, on the same address, after it exited.
func (p *proc) restart() {
	p.t.Helper()
	if !p.exited() {
		p.t.Fatalf("%s: restart while running", p.name)
	}
	p.start()
}

// stats returns the server's figures from its AdminService.
func (p *proc) stats(ctx context.Context) (*actionsyncv1.ServerStats, error) {
	c := actionsyncv1connect.NewAdminServiceClient(http.DefaultClient, "http://"+p.admin)
	res, err := c.GetStats(ctx, connect.NewRequest(&actionsyncv1.GetStatsRequest{Limit: 1}))
	if err != nil {
		return nil, err
	}
	return res.Msg.GetServer(), nil
}

// gcStats runs two garbage collections in the server (pprof's heap profile with gc=1;
// two, as sync.Pool keeps its contents over one) and returns its figures afterwards:
// the heap then holds only what is reachable.
func (p *proc) gcStats(ctx context.Context) (*actionsyncv1.ServerStats, error) {
	for range 2 {
		resp, err := p.debugGet(ctx, "/debug/pprof/heap?gc=1")
		if err != nil {
			return nil, fmt.Errorf("gc: %w", err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return p.stats(ctx)
}

// rss returns the process's resident memory in bytes, from /proc.
func (p *proc) rss() uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "VmRSS:") {
			var kb uint64
			fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(l, "VmRSS:")), "%d", &kb)
			return kb << 10
		}
	}
	return 0
}

// debugGet requests path from the server's --debug-addr listener (pprof).
func (p *proc) debugGet(ctx context.Context, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.debug+path, nil)
	if err != nil {
		return nil, err
	}
	return http.DefaultClient.Do(req)
}

// mib formats bytes in MiB.
func mib(b uint64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// goroutines returns the server's goroutine profile (pprof, debug=1: stacks grouped
// with their counts), to show where a leak is.
func (p *proc) goroutines(ctx context.Context) string {
	resp, err := p.debugGet(ctx, "/debug/pprof/goroutine?debug=1")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	return string(b)
}

// saveHeapProfile writes the server's heap profile to a file in the system's temporary
// directory and returns its path, for `go tool pprof`.
func (p *proc) saveHeapProfile(ctx context.Context) string {
	resp, err := p.debugGet(ctx, "/debug/pprof/heap?gc=1")
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	f, err := os.CreateTemp("", "stress-heap-*.pb.gz")
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		return err.Error()
	}
	return f.Name()
}
