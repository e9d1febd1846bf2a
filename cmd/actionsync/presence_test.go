package main

import (
	"strings"
	"testing"
	"time"

	"github.com/actionsync/actionsync/broker/presence"
	"github.com/actionsync/actionsync/service"
)

func TestLoadConfig_presence(t *testing.T) {
	t.Parallel()
	c, err := loadConfig(nil, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	po, limit := c.service.PresenceOptions, c.service.Limits.MaxPresenceInfoBytes
	if po.Grace != presence.DefaultGrace || po.MaxMembers != presence.DefaultMaxMembers || po.Refresh != presence.DefaultRefresh || limit != service.DefaultMaxPresenceInfoBytes {
		t.Errorf("defaults: grace %v, members %d, refresh %v, info bytes %d; want the packages' defaults", po.Grace, po.MaxMembers, po.Refresh, limit)
	}
	c, err = loadConfig([]string{"--presence-grace", "0", "--max-presence-members", "7", "--max-presence-info-bytes", "1KiB", "--presence-refresh", "500ms"}, envOf(nil))
	if err != nil {
		t.Fatal(err)
	}
	po, limit = c.service.PresenceOptions, c.service.Limits.MaxPresenceInfoBytes
	if po.Grace >= 0 || po.MaxMembers != 7 || po.Refresh != 500*time.Millisecond || limit != 1024 {
		t.Errorf("set: grace %v (want negative: none), members %d, refresh %v, info bytes %d", po.Grace, po.MaxMembers, po.Refresh, limit)
	}
	for _, bad := range [][]string{{"--presence-grace", "-1s"}, {"--max-presence-members", "0"}, {"--max-presence-info-bytes", "0"}, {"--presence-refresh", "1ms"}} {
		if _, err := loadConfig(bad, envOf(nil)); err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(bad[0], "--")) {
			t.Errorf("%v: got %v, want an error naming the flag", bad, err)
		}
	}
}
