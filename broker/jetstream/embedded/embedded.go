// Package embedded runs a NATS server with JetStream inside the actionsync process: the
// storage of `actionsync serve --data-dir`, and of the JetStream tests. A data directory
// is locked while a server uses it, and carries a format marker so that a directory
// written by an incompatible version is refused instead of reinitialised.
package embedded

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Format is the data directory format this version writes and reads.
const Format = "actionsync-data 1"

// formatFile holds Format in a data directory; lockFile is locked while a server runs.
const (
	formatFile = "FORMAT"
	lockFile   = "LOCK"
)

// ErrLocked is returned when another process uses the data directory.
var ErrLocked = errors.New("data directory in use by another process")

// ErrFormat is returned for a data directory of another format.
var ErrFormat = errors.New("data directory has an incompatible format")

// Config configures a Server.
type Config struct {
	// DataDir holds JetStream's file store (DataDir/jetstream), the lock and the format
	// marker. It is created if missing.
	DataDir string
	// Listen, if set, is a host:port where the server accepts NATS clients (port 0:
	// any free port). Empty: no listener, only in-process connections.
	Listen string
	// ServerName names the server (default: "actionsync").
	ServerName string
	// Cluster, if set, is the host:port of this server's cluster listener, and Routes
	// the cluster URLs of every server of the cluster (nats://host:port, this one
	// included). A JetStream cluster needs 3 servers for a majority.
	Cluster string
	Routes  []string
	// ClusterName names the cluster (default "actionsync").
	ClusterName string
}

// Server is a running embedded NATS server.
type Server struct {
	ns   *server.Server
	lock *os.File
}

// Start starts a server on cfg.DataDir and waits until it accepts connections.
func Start(cfg Config) (*Server, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("embedded nats: no data directory")
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	lock, err := lockDir(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	if err := checkFormat(cfg.DataDir); err != nil {
		_ = lock.Close()
		return nil, err
	}
	opts := &server.Options{
		ServerName: cfg.ServerName,
		JetStream:  true,
		StoreDir:   filepath.Join(cfg.DataDir, "jetstream"),
		DontListen: cfg.Listen == "",
		NoSigs:     true,
		NoLog:      true,
	}
	if opts.ServerName == "" {
		opts.ServerName = "actionsync"
	}
	if cfg.Listen != "" {
		host, port, err := splitHostPort(cfg.Listen)
		if err != nil {
			_ = lock.Close()
			return nil, fmt.Errorf("nats listen address: %w", err)
		}
		opts.Host, opts.Port = host, port
		if port == 0 {
			opts.Port = server.RANDOM_PORT
		}
	}
	if cfg.Cluster != "" {
		host, port, err := splitHostPort(cfg.Cluster)
		if err != nil {
			_ = lock.Close()
			return nil, fmt.Errorf("nats cluster address: %w", err)
		}
		opts.Cluster = server.ClusterOpts{Name: cfg.ClusterName, Host: host, Port: port}
		if opts.Cluster.Name == "" {
			opts.Cluster.Name = "actionsync"
		}
		opts.Routes = server.RoutesFromStr(strings.Join(cfg.Routes, ","))
	}
	ns, err := server.NewServer(opts)
	if err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		ns.WaitForShutdown()
		_ = lock.Close()
		return nil, errors.New("embedded nats: not ready after 30s")
	}
	return &Server{ns: ns, lock: lock}, nil
}

// Connect returns a new connection to the server: in process, or through its listener
// when it has one (which can reconnect to a restarted server on the same port).
func (s *Server) Connect(opts ...nats.Option) (*nats.Conn, error) {
	if s.ns.Addr() == nil {
		return nats.Connect("", append([]nats.Option{nats.InProcessServer(s.ns)}, opts...)...)
	}
	return nats.Connect(s.ns.ClientURL(), opts...)
}

// ClientURL returns the server's client URL, or "" without a listener.
func (s *Server) ClientURL() string {
	if s.ns.Addr() == nil {
		return ""
	}
	return s.ns.ClientURL()
}

// NATS returns the underlying server.
func (s *Server) NATS() *server.Server { return s.ns }

// Shutdown stops the server, flushing JetStream's store, and unlocks the directory.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
	_ = s.lock.Close()
}

// lockDir takes the directory's lock without waiting.
func lockDir(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w (is another actionsync running on it?)", dir, ErrLocked)
		}
		return nil, fmt.Errorf("data directory lock: %w", err)
	}
	_ = f.Truncate(0)
	_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

// checkFormat writes the format marker into a new directory and refuses a directory
// with another marker, or with data and no marker.
func checkFormat(dir string) error {
	path := filepath.Join(dir, formatFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if got := strings.TrimSpace(string(b)); got != Format {
			return fmt.Errorf("%s: format %q, this version reads %q: %w", dir, got, Format, ErrFormat)
		}
		return nil
	case !errors.Is(err, os.ErrNotExist):
		return fmt.Errorf("data directory format: %w", err)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("data directory: %w", err)
	}
	for _, e := range entries {
		if e.Name() != lockFile {
			return fmt.Errorf("%s: holds %q but no %s marker: not an actionsync data directory: %w", dir, e.Name(), formatFile, ErrFormat)
		}
	}
	if err := os.WriteFile(path, []byte(Format+"\n"), 0o640); err != nil {
		return fmt.Errorf("data directory format: %w", err)
	}
	return nil
}

// splitHostPort splits host:port with a numeric port.
func splitHostPort(addr string) (string, int, error) {
	host, p, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, err
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("bad port in %q", addr)
	}
	return host, port, nil
}
