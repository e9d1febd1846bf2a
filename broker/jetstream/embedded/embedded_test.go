package embedded_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/actionsync/actionsync/broker/jetstream/embedded"
)

// TestStart_lock: a second server on a data directory in use is refused with ErrLocked;
// once the first has shut down, the directory can be used again.
func TestStart_lock(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	first, err := embedded.Start(embedded.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := embedded.Start(embedded.Config{DataDir: dir}); !errors.Is(err, embedded.ErrLocked) {
		t.Fatalf("second server on %s: got %v, want %v", dir, err, embedded.ErrLocked)
	}
	nc, err := first.Connect()
	if err != nil {
		t.Fatal(err)
	}
	if !nc.IsConnected() {
		t.Error("in-process connection not connected")
	}
	nc.Close()
	first.Shutdown()
	again, err := embedded.Start(embedded.Config{DataDir: dir, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatalf("after the first shut down: %v", err)
	}
	if again.ClientURL() == "" {
		t.Error("a server with a listener has no client URL")
	}
	again.Shutdown()
}

// TestStart_format: a new directory gets the format marker; a directory with another
// marker, or with files and no marker, is refused and left as it is.
func TestStart_format(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	srv, err := embedded.Start(embedded.Config{DataDir: filepath.Join(dir, "new")})
	if err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	if b, err := os.ReadFile(filepath.Join(dir, "new", "FORMAT")); err != nil || string(b) != embedded.Format+"\n" {
		t.Errorf("FORMAT: %q, %v", b, err)
	}

	other := filepath.Join(dir, "other")
	if err := os.MkdirAll(other, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(other, "FORMAT"), []byte("actionsync-data 99\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, err := embedded.Start(embedded.Config{DataDir: other}); !errors.Is(err, embedded.ErrFormat) {
		t.Errorf("directory of format 99: got %v, want %v", err, embedded.ErrFormat)
	}

	foreign := filepath.Join(dir, "foreign")
	if err := os.MkdirAll(filepath.Join(foreign, "photos"), 0o750); err != nil {
		t.Fatal(err)
	}
	if _, err := embedded.Start(embedded.Config{DataDir: foreign}); !errors.Is(err, embedded.ErrFormat) {
		t.Errorf("directory with other files: got %v, want %v", err, embedded.ErrFormat)
	}
	if _, err := os.Stat(filepath.Join(foreign, "FORMAT")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a refused directory got a FORMAT file (%v)", err)
	}
}
