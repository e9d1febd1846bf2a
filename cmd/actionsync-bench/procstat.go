package main

import (
	"bufio"
	"bytes"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clkTck is USER_HZ, the unit of /proc/PID/stat and /proc/stat times on Linux.
const clkTck = 100

// procCPUTicks returns utime+stime of pid from /proc/PID/stat, in clock ticks.
func procCPUTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	return parseStatTicks(b)
}

// parseStatTicks reads utime and stime (fields 14 and 15) of a /proc/PID/stat line. The
// command name (field 2) may hold spaces and parentheses, so fields count from the last ')'.
func parseStatTicks(b []byte) (int64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0, fmt.Errorf("parse /proc stat: no ')' in %q", b)
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc stat: got %d fields after the name, want >= 13", len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc stat: utime %q stime %q", f[11], f[12])
	}
	return u + s, nil
}

// procRSSKiB returns VmRSS of pid from /proc/PID/status, in KiB.
func procRSSKiB(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("read /proc/%d/status: no VmRSS", pid)
}

// coreTicks is one CPU's line of /proc/stat: busy and total ticks.
type coreTicks struct{ busy, total int64 }

// perCoreTicks reads every cpuN line of /proc/stat. Busy is everything but idle and
// iowait, over user..steal, as the peer counts it.
func perCoreTicks() map[string]coreTicks {
	out := map[string]coreTicks{}
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return out
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 9 || !strings.HasPrefix(f[0], "cpu") || f[0] == "cpu" {
			continue
		}
		var v [8]int64
		for i := range v {
			v[i], _ = strconv.ParseInt(f[i+1], 10, 64)
		}
		var total int64
		for _, x := range v {
			total += x
		}
		out[strings.TrimPrefix(f[0], "cpu")] = coreTicks{busy: total - v[3] - v[4], total: total}
	}
	return out
}

// selfCPU is this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// cpuSnap is a point-in-time reading of every CPU figure a phase reports.
type cpuSnap struct {
	t       time.Time
	self    time.Duration
	srv     int64   // server ticks, summed over the server processes; -1 if unknown
	srvEach []int64 // each server process's ticks, in --server-pid order; -1 if unknown
	cores   map[string]coreTicks
	srvRSS  int64 // KiB, summed over the server processes; -1 if unknown
}

func takeCPUSnap(serverPIDs []int) cpuSnap {
	s := cpuSnap{t: time.Now(), self: selfCPU(), srv: -1, cores: perCoreTicks(), srvRSS: -1}
	if len(serverPIDs) > 0 {
		s.srv, s.srvEach = sumProcs(serverPIDs, procCPUTicks)
		s.srvRSS, _ = sumProcs(serverPIDs, procRSSKiB)
	}
	return s
}

// sumProcs reads one figure of each process and returns their sum and each value. The
// sum is -1 if any reading failed, since a partial sum would pass for the whole server;
// a failed reading is -1 in the list.
func sumProcs(pids []int, read func(pid int) (int64, error)) (int64, []int64) {
	sum := int64(0)
	each := make([]int64, len(pids))
	for i, pid := range pids {
		v, err := read(pid)
		if err != nil {
			each[i], sum = -1, -1
			continue
		}
		each[i] = v
		if sum >= 0 {
			sum += v
		}
	}
	return sum, each
}

// cpuFigures sets the CPU keys of the peer (client_cpu_pct, server_cpu_pct,
// srv_core_busy_pct, cli_core_busy_pct) plus foreign_pct: the most of either pinned
// core that other processes used (core busy% minus our process's CPU%).
func cpuFigures(r *result, a, b cpuSnap, serverCore, clientCore string) {
	wall := b.t.Sub(a.t).Seconds()
	busy := func(core string) any {
		x, ok1 := a.cores[core]
		y, ok2 := b.cores[core]
		if core == "" || !ok1 || !ok2 || y.total == x.total {
			return nil
		}
		return round1(100 * float64(y.busy-x.busy) / float64(y.total-x.total))
	}
	cli := round1(100 * (b.self - a.self).Seconds() / wall)
	r.set("client_cpu_pct", cli)
	var srv any
	if a.srv >= 0 && b.srv >= 0 {
		srv = round1(100 * float64(b.srv-a.srv) / clkTck / wall)
	}
	r.set("server_cpu_pct", srv)
	if len(a.srvEach) > 1 && len(b.srvEach) == len(a.srvEach) {
		// Several server processes (nodes and their NATS): each one's share, in
		// --server-pid order, to show where the server CPU went.
		each := make([]any, len(a.srvEach))
		for i := range each {
			if a.srvEach[i] >= 0 && b.srvEach[i] >= 0 {
				each[i] = round1(100 * float64(b.srvEach[i]-a.srvEach[i]) / clkTck / wall)
			}
		}
		r.set("server_cpu_pct_each", each)
	}
	sb, cb := busy(serverCore), busy(clientCore)
	r.set("srv_core_busy_pct", sb)
	r.set("cli_core_busy_pct", cb)
	foreign := 0.0
	if x, ok := sb.(float64); ok {
		if s, ok := srv.(float64); ok {
			foreign = math.Max(foreign, x-s)
		}
	}
	if x, ok := cb.(float64); ok {
		foreign = math.Max(foreign, x-cli)
	}
	r.set("foreign_pct", math.Round(foreign))
}

// raiseNoFile raises RLIMIT_NOFILE's soft limit to the hard limit and returns it.
func raiseNoFile() (uint64, error) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		return 0, err
	}
	if lim.Cur >= lim.Max {
		return lim.Cur, nil
	}
	raised := syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		return lim.Cur, err
	}
	return raised.Cur, nil
}
