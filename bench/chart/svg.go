package main

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"math"
	"strings"
)

// Colours and geometry of the chart.
const (
	oursColour   = "#2563eb"
	peerColour   = "#f97316"
	targetColour = "#dc2626"
	panelW       = 240.0
	plotH        = 220.0
	plotTop      = 96.0 // below the title, legend and panel titles
	plotLeft     = 52.0 // room for the y labels, inside each panel
	svgBottom    = 64.0 // group labels and the footnote
)

type bar struct {
	value  float64
	ok     bool
	colour string
}

type group struct {
	label  string
	bars   []bar
	target float64 // 0: none
}

type panel struct {
	title  string
	format func(float64) string
	groups []group
}

// panels are what the chart shows: deliveries/s and deliveries per server CPU-second
// per subscriber count, and p99 latency per latency phase (one panel each: 3 ms and
// 60 ms targets do not share an axis).
func panels(r runLine) []panel {
	pair := func(key string) []bar {
		o, oOK := num(r.Ours, key)
		p, pOK := 0.0, false
		if r.Peer != nil {
			p, pOK = num(r.Peer, key)
		}
		return []bar{{o, oOK, oursColour}, {p, pOK, peerColour}}
	}
	tput := panel{title: "Deliveries per second", format: human}
	for _, n := range counts(r.Ours, "tput_") {
		tput.groups = append(tput.groups, group{label: n + " subs", bars: pair("tput_" + n)})
	}
	perCPU := panel{title: "Deliveries per server CPU-second", format: human}
	for _, n := range counts(r.Ours, "srv_deliv_per_cpu_s_") {
		g := group{label: n + " subs", bars: pair("srv_deliv_per_cpu_s_" + n)}
		switch n {
		case "10":
			g.target = 500_000
		case "1000":
			g.target = 1_000_000
		}
		perCPU.groups = append(perCPU.groups, g)
	}
	out := []panel{tput, perCPU}
	for _, n := range counts(r.Ours, "p99_ms_") {
		p := panel{title: "p99 latency, " + n + " subs", format: millis}
		g := group{label: "200 actions/s", bars: pair("p99_ms_" + n)}
		if v, ok := r.Knobs["rate"]; ok {
			g.label = fmt.Sprint(v, " actions/s")
		}
		switch n {
		case "100":
			g.target = 3
		case "1000":
			g.target = 60
		}
		p.groups = append(p.groups, g)
		out = append(out, p)
	}
	return out
}

// renderSVG draws r as a standalone SVG document.
func renderSVG(r runLine) string {
	ps := panels(r)
	width := panelW*float64(len(ps)) + 20
	height := plotTop + plotH + svgBottom
	var b bytes.Buffer
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="11">`+"\n", width, height, width, height)
	fmt.Fprintf(&b, `<rect width="100%%" height="100%%" fill="#ffffff"/>`+"\n")
	peerName := "Socket.IO peer"
	if r.Peer != nil {
		if s, ok := r.Peer["peer"].(string); ok {
			peerName = s
		}
	}
	text(&b, 10, 20, "start", 15, "bold", "actionsync vs "+peerName+", same machine, same run")
	text(&b, 10, 38, "start", 11, "normal", fmt.Sprintf("run %s, %s; server pinned to one core (GOMAXPROCS=1), load on another", orDash(r.Time), orDash(r.Git)))
	legend(&b, 10, 56, oursColour, "actionsync")
	legend(&b, 110, 56, peerColour, peerName)
	fmt.Fprintf(&b, `<line x1="250" y1="52" x2="272" y2="52" stroke="%s" stroke-dasharray="4 3" stroke-width="2"/>`+"\n", targetColour)
	text(&b, 277, 56, "start", 11, "normal", "target (issue 4)")
	for i, p := range ps {
		drawPanel(&b, 10+panelW*float64(i), p)
	}
	if len(r.Failed) > 0 {
		text(&b, 10, height-12, "start", 11, "bold", "failed phases: "+strings.Join(r.Failed, ", "))
	} else {
		text(&b, 10, height-12, "start", 10, "normal", "Figures from bench/results.jsonl (last line), drawn by go run ./bench/chart. See docs/benchmarks.md.")
	}
	b.WriteString("</svg>\n")
	return b.String()
}

func drawPanel(b *bytes.Buffer, x0 float64, p panel) {
	top, bottom := plotTop, plotTop+plotH
	left, right := x0+plotLeft, x0+panelW-12
	text(b, x0+panelW/2, plotTop-14, "middle", 12, "bold", p.title)
	hi := 0.0
	for _, g := range p.groups {
		hi = math.Max(hi, g.target)
		for _, br := range g.bars {
			if br.ok {
				hi = math.Max(hi, br.value)
			}
		}
	}
	step, top2 := niceScale(hi)
	y := func(v float64) float64 { return bottom - v/top2*(bottom-top) }
	for v := 0.0; v <= top2+step/2; v += step {
		fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e5e7eb"/>`+"\n", left, y(v), right, y(v))
		text(b, left-4, y(v)+4, "end", 10, "normal", p.format(v))
	}
	fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#9ca3af"/>`+"\n", left, bottom, right, bottom)
	if len(p.groups) == 0 {
		return
	}
	gw := (right - left) / float64(len(p.groups))
	for i, g := range p.groups {
		gx := left + gw*float64(i)
		bw := math.Min(28, (gw-12)/float64(len(g.bars)))
		bx := gx + (gw-bw*float64(len(g.bars)))/2
		for j, br := range g.bars {
			x := bx + bw*float64(j)
			if !br.ok {
				text(b, x+bw/2, bottom-4, "middle", 9, "normal", "n/a")
				continue
			}
			fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%s</title></rect>`+"\n",
				x+1, y(br.value), bw-2, bottom-y(br.value), br.colour, esc(p.format(br.value)))
			text(b, x+bw/2, y(br.value)-3, "middle", 9, "normal", p.format(br.value))
		}
		if g.target > 0 {
			fmt.Fprintf(b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-dasharray="4 3" stroke-width="2"/>`+"\n",
				gx+4, y(g.target), gx+gw-4, y(g.target), targetColour)
		}
		text(b, gx+gw/2, bottom+16, "middle", 11, "normal", g.label)
	}
}

// niceScale returns a tick step of 1, 2 or 5 x 10^k and the axis top (a multiple of the
// step at or above hi), for about four ticks.
func niceScale(hi float64) (step, top float64) {
	if hi <= 0 || math.IsNaN(hi) || math.IsInf(hi, 0) {
		return 1, 4
	}
	raw := hi / 4
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if step = m * mag; step >= raw {
			break
		}
	}
	return step, math.Ceil(hi/step) * step
}

func legend(b *bytes.Buffer, x, y float64, colour, label string) {
	fmt.Fprintf(b, `<rect x="%.1f" y="%.1f" width="12" height="12" fill="%s"/>`+"\n", x, y-10, colour)
	text(b, x+16, y, "start", 11, "normal", label)
}

func text(b *bytes.Buffer, x, y float64, anchor string, size int, weight, s string) {
	fmt.Fprintf(b, `<text x="%.1f" y="%.1f" text-anchor="%s" font-size="%d" font-weight="%s">%s</text>`+"\n", x, y, anchor, size, weight, esc(s))
}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}
