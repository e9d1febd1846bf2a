package main

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// The layout of a bench/backends.sh result directory, as compare reads it:
//
//	meta.json                      {"time":…, "git":…, "knobs":{…}, …}: copied first into the line
//	phases/PHASE.LABEL.rROUND.json one actionsync-bench line: PHASE is tput_N or lat_N, LABEL
//	                               the backend (--label), ROUND the repetition (1, 2, …)
//	failed.txt                     one failed phase per line (absent: none failed)
const phasesDir = "phases"

// baselineLabel is the backend the others are compared with.
const baselineLabel = "memory"

// Goals of the storage-backend issue, checked by compare for every backend but the baseline.
const (
	goalShareOfMemory = 0.5 // deliveries per server CPU-second, as a share of memory's, at goalTputN
	goalTputN         = 1000
	goalP99Ms         = 10 // p99 publish-to-delivery ms at 200 actions/s, at goalLatN
	goalLatN          = 100
)

// compareFigures are the figures compare reduces over the runs of each phase.
var compareFigures = map[string][]string{
	"tput": {"srv_deliv_per_cpu_s", "deliveries_per_s", "server_cpu_pct", "client_cpu_pct", "actions_per_msg", "foreign_pct"},
	"lat": {"p50_ms", "p99_ms", "max_ms", "dispatch_p50_ms", "dispatch_p99_ms", "rate_kept_pct",
		"server_cpu_pct", "client_cpu_pct", "foreign_pct"},
}

var comparePhaseFile = regexp.MustCompile(`^((tput|lat)_\d+)\.(.+)\.r(\d+)\.json$`)

// phaseRun is one run of one phase of one backend.
type phaseRun struct {
	phase, kind, label string
	round              int
	r                  *result
}

// compare prints the final line of a bench/backends.sh run: for each backend and phase
// the median, min and max over the runs of each figure, every backend's deliveries per
// server CPU-second as a share of the baseline's (of the medians, and round by round),
// and the goals with pass/fail. A readable table goes to stderr.
func compare(cfg config, stdout, stderr io.Writer) error {
	dir := cfg.dir
	runs, err := readPhaseRuns(filepath.Join(dir, phasesDir))
	if err != nil {
		return err
	}
	if len(runs) == 0 {
		return fmt.Errorf("compare: no phase results in %s", filepath.Join(dir, phasesDir))
	}
	out := newResult()
	meta := newResult()
	if err := readObject(filepath.Join(dir, metaFile), meta); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	for _, k := range meta.keys {
		out.set(k, meta.vals[k])
	}

	labels := compareLabels(runs)
	backends := newResult()
	for _, label := range labels {
		phases := newResult()
		for _, phase := range comparePhases(runs) {
			var rs []phaseRun
			for _, pr := range runs {
				if pr.label == label && pr.phase == phase {
					rs = append(rs, pr)
				}
			}
			if len(rs) > 0 {
				phases.set(phase, reducePhase(rs))
			}
		}
		backends.set(label, phases)
	}
	out.set("backends", backends)

	shares := newResult()
	goals := newResult()
	for _, label := range labels {
		if label == baselineLabel {
			continue
		}
		ls := newResult()
		for _, phase := range comparePhases(runs) {
			if !strings.HasPrefix(phase, "tput_") {
				continue
			}
			s := shareOf(runs, label, phase, "srv_deliv_per_cpu_s")
			if s == nil {
				continue
			}
			ls.set("srv_deliv_per_cpu_s_"+strings.TrimPrefix(phase, "tput_"), s)
			if phase == fmt.Sprint("tput_", goalTputN) {
				if v, ok := num(s.get("of_medians")); ok {
					goals.set(fmt.Sprintf("%s.share_of_memory_srv_deliv_per_cpu_s_%d", label, goalTputN),
						newResult().set("value", v).set("want", fmt.Sprint(">= ", goalShareOfMemory)).set("pass", v >= goalShareOfMemory))
				}
			}
		}
		shares.set(label, ls)
		if p, ok := backends.get(label).(*result); ok {
			if lat, ok := p.get(fmt.Sprint("lat_", goalLatN)).(*result); ok {
				if f, ok := lat.get("p99_ms").(*result); ok {
					if v, ok := num(f.get("median")); ok {
						hi, _ := num(f.get("max"))
						goals.set(fmt.Sprintf("%s.p99_ms_%d", label, goalLatN),
							newResult().set("value", v).set("worst_run", hi).set("want", fmt.Sprint("<= ", goalP99Ms)).set("pass", v <= goalP99Ms))
					}
				}
			}
		}
	}
	out.set("vs_"+baselineLabel, shares)
	out.set("goals", goals)

	if err := writeFinalLine(stdout, dir, out); err != nil {
		return err
	}
	writeCompareTable(stderr, labels, backends, shares, goals)
	return nil
}

// readPhaseRuns reads every phases/PHASE.LABEL.rROUND.json of dir; other files are skipped.
func readPhaseRuns(dir string) ([]phaseRun, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var runs []phaseRun
	for _, e := range entries {
		m := comparePhaseFile.FindStringSubmatch(e.Name())
		if m == nil || e.IsDir() {
			continue
		}
		r := newResult()
		if err := readObject(filepath.Join(dir, e.Name()), r); err != nil {
			return nil, err
		}
		round, _ := strconv.Atoi(m[4])
		runs = append(runs, phaseRun{phase: m[1], kind: m[2], label: m[3], round: round, r: r})
	}
	return runs, nil
}

// compareLabels lists the backends: the baseline first, then the others by name.
func compareLabels(runs []phaseRun) []string {
	var labels []string
	for _, pr := range runs {
		if !slices.Contains(labels, pr.label) {
			labels = append(labels, pr.label)
		}
	}
	slices.SortFunc(labels, func(a, b string) int {
		switch {
		case a == b:
			return 0
		case a == baselineLabel:
			return -1
		case b == baselineLabel:
			return 1
		}
		return strings.Compare(a, b)
	})
	return labels
}

// comparePhases lists the phases: tput by N, then lat by N.
func comparePhases(runs []phaseRun) []string {
	var phases []string
	for _, pr := range runs {
		if !slices.Contains(phases, pr.phase) {
			phases = append(phases, pr.phase)
		}
	}
	slices.SortFunc(phases, func(a, b string) int {
		return strings.Compare(phaseSortKey(a+".json"), phaseSortKey(b+".json"))
	})
	return phases
}

// reducePhase gives the runs, the violations and errors summed over them, and
// {median, min, max, runs} of each figure, runs in round order.
func reducePhase(rs []phaseRun) *result {
	slices.SortFunc(rs, func(a, b phaseRun) int { return a.round - b.round })
	out := newResult().set("runs", len(rs))
	var violations, errs float64
	for _, pr := range rs {
		v, _ := num(pr.r.get("violations"))
		e, _ := num(pr.r.get("errors"))
		violations += v
		errs += e
	}
	out.set("violations", violations).set("errors", errs)
	for _, f := range compareFigures[rs[0].kind] {
		var xs []float64
		for _, pr := range rs {
			if x, ok := num(pr.r.get(f)); ok {
				xs = append(xs, x)
			}
		}
		if len(xs) == 0 {
			continue
		}
		out.set(f, spread(xs))
	}
	return out
}

// spread is {median, min, max, runs} of xs (in the order given).
func spread(xs []float64) *result {
	s := slices.Clone(xs)
	slices.Sort(s)
	return newResult().set("median", round3(median(s))).set("min", s[0]).set("max", s[len(s)-1]).set("runs", xs)
}

// median of sorted xs: the middle value, or the mean of the two middle ones.
func median(sorted []float64) float64 {
	n := len(sorted)
	if n == 0 {
		return math.NaN()
	}
	if n%2 == 1 {
		return sorted[n/2]
	}
	return (sorted[n/2-1] + sorted[n/2]) / 2
}

// shareOf is label's figure of phase as a share of the baseline's: the ratio of the
// medians, and the ratio in each round both ran (drift between rounds cancels there).
func shareOf(runs []phaseRun, label, phase, figure string) *result {
	byRound := func(l string) map[int]float64 {
		m := map[int]float64{}
		for _, pr := range runs {
			if pr.label == l && pr.phase == phase {
				if x, ok := num(pr.r.get(figure)); ok {
					m[pr.round] = x
				}
			}
		}
		return m
	}
	mine, base := byRound(label), byRound(baselineLabel)
	if len(mine) == 0 || len(base) == 0 {
		return nil
	}
	values := func(m map[int]float64) []float64 {
		var xs []float64
		for _, x := range m {
			xs = append(xs, x)
		}
		slices.Sort(xs)
		return xs
	}
	bm := median(values(base))
	if bm == 0 {
		return nil
	}
	var rounds []int
	for r := range mine {
		if _, ok := base[r]; ok && base[r] != 0 {
			rounds = append(rounds, r)
		}
	}
	slices.Sort(rounds)
	perRound := make([]float64, len(rounds))
	for i, r := range rounds {
		perRound[i] = round3(mine[r] / base[r])
	}
	return newResult().set("of_medians", round3(median(values(mine))/bm)).set("per_round", perRound)
}

// writeCompareTable writes the figures as aligned text: median (min–max) per backend.
func writeCompareTable(w io.Writer, labels []string, backends, shares, goals *result) {
	fmt.Fprintf(w, "%-40s", "median (min-max) over the runs")
	for _, l := range labels {
		fmt.Fprintf(w, " %-28s", l)
	}
	fmt.Fprintln(w)
	var rows [][2]string // phase, figure
	for _, l := range labels {
		p := backends.get(l).(*result)
		for _, phase := range p.keys {
			for _, f := range p.get(phase).(*result).keys {
				if _, ok := p.get(phase).(*result).get(f).(*result); ok && !slices.Contains(rows, [2]string{phase, f}) {
					rows = append(rows, [2]string{phase, f})
				}
			}
		}
	}
	for _, row := range rows {
		fmt.Fprintf(w, "%-40s", row[0]+" "+row[1])
		for _, l := range labels {
			cell := "-"
			if ph, ok := backends.get(l).(*result).get(row[0]).(*result); ok {
				if s, ok := ph.get(row[1]).(*result); ok {
					cell = fmt.Sprintf("%s (%s-%s)", numText(s.get("median")), numText(s.get("min")), numText(s.get("max")))
				}
			}
			fmt.Fprintf(w, " %-28s", cell)
		}
		fmt.Fprintln(w)
	}
	for _, l := range shares.keys {
		for _, k := range shares.get(l).(*result).keys {
			s := shares.get(l).(*result).get(k).(*result)
			fmt.Fprintf(w, "%s %s / %s: %v of the medians, per round %v\n", l, k, baselineLabel, s.get("of_medians"), s.get("per_round"))
		}
	}
	for _, k := range goals.keys {
		g := goals.get(k).(*result)
		met := "met"
		if g.get("pass") != true {
			met = "NOT met"
		}
		fmt.Fprintf(w, "goal %s: %v, want %v: %s\n", k, g.get("value"), g.get("want"), met)
	}
}

// numText writes a number without an exponent (1272906, not 1.272906e+06).
func numText(v any) string {
	if x, ok := num(v); ok {
		return strconv.FormatFloat(x, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}
