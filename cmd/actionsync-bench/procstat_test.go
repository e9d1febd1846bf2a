package main

import (
	"errors"
	"os"
	"slices"
	"testing"
	"time"
)

func TestParseStatTicks(t *testing.T) {
	t.Parallel()
	// The command name may hold spaces and parentheses; utime 1234, stime 56.
	line := "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1234 56 0 0 20 0 3 0 100 1000 200 18446744073709551615\n"
	got, err := parseStatTicks([]byte(line))
	if err != nil || got != 1290 {
		t.Errorf("got %d, %v; want 1290", got, err)
	}
	for _, bad := range []string{"4242 no paren", "4242 (x) S 1 2", "4242 (x) S 1 2 3 4 5 6 7 8 9 10 u s"} {
		if _, err := parseStatTicks([]byte(bad)); err == nil {
			t.Errorf("%q: got nil error, want one", bad)
		}
	}
}

func TestProcReadings_self(t *testing.T) {
	t.Parallel()
	pid := os.Getpid()
	if _, err := procCPUTicks(pid); err != nil {
		t.Errorf("procCPUTicks: %v", err)
	}
	if rss, err := procRSSKiB(pid); err != nil || rss <= 0 {
		t.Errorf("procRSSKiB: got %d, %v; want > 0", rss, err)
	}
	if cores := perCoreTicks(); len(cores) == 0 {
		t.Error("perCoreTicks: got no cores")
	}
	a := takeCPUSnap([]int{pid})
	for end := time.Now().Add(30 * time.Millisecond); time.Now().Before(end); {
	}
	b := takeCPUSnap([]int{pid})
	r := newResult()
	cpuFigures(r, a, b, "0", "no-such-core")
	if pct, ok := r.get("client_cpu_pct").(float64); !ok || pct <= 0 {
		t.Errorf("client_cpu_pct: got %v, want > 0", r.get("client_cpu_pct"))
	}
	if r.get("cli_core_busy_pct") != nil {
		t.Errorf("cli_core_busy_pct of an unknown core: got %v, want nil", r.get("cli_core_busy_pct"))
	}
	if _, err := raiseNoFile(); err != nil {
		t.Errorf("raiseNoFile: %v", err)
	}
}

func TestSumProcs(t *testing.T) {
	t.Parallel()
	read := func(pid int) (int64, error) {
		if pid == 99 {
			return 0, errors.New("no such process")
		}
		return int64(pid * 10), nil
	}
	if sum, each := sumProcs([]int{1, 2, 3}, read); sum != 60 || !slices.Equal(each, []int64{10, 20, 30}) {
		t.Errorf("got %d %v, want 60 [10 20 30]", sum, each)
	}
	// One process gone: the sum is unknown, not the sum of the rest.
	if sum, each := sumProcs([]int{1, 99, 3}, read); sum != -1 || !slices.Equal(each, []int64{10, -1, 30}) {
		t.Errorf("got %d %v, want -1 [10 -1 30]", sum, each)
	}
	if sum, each := sumProcs(nil, read); sum != 0 || len(each) != 0 {
		t.Errorf("no processes: got %d %v, want 0 []", sum, each)
	}
}
