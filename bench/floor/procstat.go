package main

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// clkTck is USER_HZ, the unit of /proc/PID/stat times on Linux (as actionsync-bench).
const clkTck = 100

// cpuReading is what readCPU reads at one instant.
type cpuReading struct {
	server, self        time.Duration // the server's CPU time, this process's
	serverErr           error
	coreBusy, coreTotal int64 // ticks of the server's core
	coreOK              bool
}

// readCPU reads this process's CPU time, the CPU time of serverPID if > 0 and the ticks
// of core serverCore if >= 0.
func readCPU(serverPID, serverCore int) cpuReading {
	r := cpuReading{self: selfCPU()}
	if serverPID > 0 {
		r.server, r.serverErr = procCPU(serverPID)
	}
	if serverCore >= 0 {
		r.coreBusy, r.coreTotal, r.coreOK = coreTicks(serverCore)
	}
	return r
}

// procCPU returns the CPU time (utime+stime) pid has used, from /proc/PID/stat.
func procCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may hold spaces and parentheses, so fields count from
	// the last ')': utime and stime are fields 14 and 15.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 || i+2 > len(b) {
		return 0, fmt.Errorf("parse /proc/%d/stat: no ')' in %q", pid, b)
	}
	f := strings.Fields(string(b[i+2:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("parse /proc/%d/stat: got %d fields after the name, want >= 13", pid, len(f))
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	s, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("parse /proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return time.Duration(u+s) * time.Second / clkTck, nil
}

// selfCPU returns this process's user+system CPU time.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
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

// coreTicks reads the line of CPU core of /proc/stat: the ticks the core was busy (all
// but idle and iowait) and its total ticks. ok is false if there is no such core.
func coreTicks(core int) (busy, total int64, ok bool) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0, false
	}
	name := "cpu" + strconv.Itoa(core)
	for line := range strings.Lines(string(b)) {
		f := strings.Fields(line)
		if len(f) < 9 || f[0] != name {
			continue
		}
		for i, s := range f[1:9] { // user nice system idle iowait irq softirq steal
			v, _ := strconv.ParseInt(s, 10, 64)
			total += v
			if i != 3 && i != 4 {
				busy += v
			}
		}
		return busy, total, true
	}
	return 0, 0, false
}
