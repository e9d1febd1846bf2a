package main

import (
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/actionsync/actionsync/auth"
)

// keysPollInterval is how often the server checks whether --auth-jwks-file changed.
const keysPollInterval = 2 * time.Second

// watchKeys re-reads v's keys file on SIGHUP, and when the file changes, until done is
// closed. A file that fails to read keeps the keys in use (and is logged). It is the
// server's goroutine: started in listen, stopped at shutdown.
func watchKeys(v *auth.Verifier, log *slog.Logger, done <-chan struct{}) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(keysPollInterval)
	defer tick.Stop()
	for {
		var err error
		reloaded := false
		select {
		case <-done:
			return
		case <-hup:
			err, reloaded = v.Reload(), true
		case <-tick.C:
			reloaded, err = v.ReloadIfChanged()
		}
		switch {
		case err != nil:
			log.Error("auth: keys file not reloaded; the keys in use stay", "error", err)
		case reloaded:
			log.Info("auth: keys file reloaded")
		}
	}
}
