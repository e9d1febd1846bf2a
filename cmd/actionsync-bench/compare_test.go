package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCompare(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	write := func(name, content string) {
		t.Helper()
		path := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(content+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("meta.json", `{"time":"20261202T100000Z","git":"abc123","knobs":{"runs":3}}`)
	// memory: 1000, 800, 1200 k; data-dir: 400, 500, 700 k (per round 0.4, 0.625, 0.583).
	for i, v := range []string{"1000000", "800000", "1200000"} {
		write("phases/tput_1000.memory.r"+string(rune('1'+i))+".json", `{"label":"memory","mode":"tput","srv_deliv_per_cpu_s":`+v+`,"violations":0,"errors":0}`)
	}
	for i, v := range []string{"400000", "500000", "700000"} {
		write("phases/tput_1000.data-dir.r"+string(rune('1'+i))+".json", `{"label":"data-dir","mode":"tput","srv_deliv_per_cpu_s":`+v+`,"violations":0,"errors":0}`)
	}
	write("phases/lat_100.memory.r1.json", `{"label":"memory","mode":"lat","p99_ms":2.5,"dispatch_p99_ms":1,"violations":0,"errors":0}`)
	write("phases/lat_100.data-dir.r1.json", `{"label":"data-dir","mode":"lat","p99_ms":12,"dispatch_p99_ms":9,"violations":2,"errors":1}`)
	write("phases/lat_100.data-dir.r2.json", `{"label":"data-dir","mode":"lat","p99_ms":8,"dispatch_p99_ms":7,"violations":0,"errors":0}`)
	write("phases/notes.txt", "not a phase")
	write("failed.txt", "lat_100.data-dir.r1")

	var stdout, stderr bytes.Buffer
	if err := run(t.Context(), []string{"--mode", "compare", "--dir", dir}, &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	line := strings.TrimSpace(stdout.String())
	if !strings.HasPrefix(line, `{"time":"20261202T100000Z","git":"abc123","knobs":{"runs":3},"backends":{"memory":{"tput_1000":`) {
		t.Errorf("got %s, want meta first, then the memory backend first, tput before lat", line)
	}
	var got struct {
		Backends map[string]map[string]map[string]json.RawMessage
		VsMemory map[string]map[string]struct {
			OfMedians float64   `json:"of_medians"`
			PerRound  []float64 `json:"per_round"`
		} `json:"vs_memory"`
		Goals map[string]struct {
			Value float64
			Pass  bool
		}
		FailedPhases []string `json:"failed_phases"`
	}
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ label, phase, figure, want string }{
		{"memory", "tput_1000", "srv_deliv_per_cpu_s", `{"median":1000000,"min":800000,"max":1200000,"runs":[1000000,800000,1200000]}`},
		{"data-dir", "tput_1000", "srv_deliv_per_cpu_s", `{"median":500000,"min":400000,"max":700000,"runs":[400000,500000,700000]}`},
		{"data-dir", "lat_100", "p99_ms", `{"median":10,"min":8,"max":12,"runs":[12,8]}`},
		{"data-dir", "lat_100", "runs", `2`},
		{"data-dir", "lat_100", "violations", `2`},
		{"data-dir", "lat_100", "errors", `1`},
	} {
		if g := string(got.Backends[tt.label][tt.phase][tt.figure]); g != tt.want {
			t.Errorf("backends.%s.%s.%s: got %s, want %s", tt.label, tt.phase, tt.figure, g, tt.want)
		}
	}
	share := got.VsMemory["data-dir"]["srv_deliv_per_cpu_s_1000"]
	if share.OfMedians != 0.5 || len(share.PerRound) != 3 || share.PerRound[0] != 0.4 || share.PerRound[1] != 0.625 || share.PerRound[2] != 0.583 {
		t.Errorf("vs_memory: got %+v, want 0.5 of the medians, per round [0.4 0.625 0.583]", share)
	}
	for k, want := range map[string]struct {
		value float64
		pass  bool
	}{
		"data-dir.share_of_memory_srv_deliv_per_cpu_s_1000": {0.5, true},
		"data-dir.p99_ms_100":                               {10, true},
	} {
		if g, ok := got.Goals[k]; !ok || g.Value != want.value || g.Pass != want.pass {
			t.Errorf("goals.%s: got %+v (present %v), want %+v", k, g, ok, want)
		}
	}
	if _, ok := got.Goals["memory.p99_ms_100"]; ok {
		t.Error("goals: got one for the baseline, want goals only for the other backends")
	}
	if len(got.FailedPhases) != 1 {
		t.Errorf("failed_phases: got %v, want the one listed", got.FailedPhases)
	}
	if !strings.Contains(stderr.String(), "500000 (400000-700000)") {
		t.Errorf("stderr table: got\n%s\nwant median (min-max) without exponents", stderr.String())
	}
	if !strings.Contains(stderr.String(), "goal data-dir.p99_ms_100: 10, want <= 10: met") {
		t.Errorf("stderr table: got\n%s\nwant the goals stated", stderr.String())
	}
}

func TestCompare_noPhases(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, phasesDir), 0o755); err != nil {
		t.Fatal(err)
	}
	err := run(t.Context(), []string{"--mode", "compare", "--dir", dir}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "no phase results") {
		t.Errorf("got %v, want an error saying there are no phase results", err)
	}
}
