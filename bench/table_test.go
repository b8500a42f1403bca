//go:build bench

package bench

import (
	"fmt"
	"sort"
	"strings"
	"time"
)

// table is the harness's output: sections of rows, each a measure, its
// value, and the target it is held to (if any) with the verdict. A new
// section is one more call to section.
type table struct {
	notes    []string // lines above the table: machine, settings
	sections []*section
}

type section struct {
	title string
	rows  []row
	notes []string
}

type row struct {
	what, value, target, verdict string
}

func (t *table) note(format string, args ...any) {
	t.notes = append(t.notes, fmt.Sprintf(format, args...))
}

func (t *table) section(title string) *section {
	s := &section{title: title}
	t.sections = append(t.sections, s)
	return s
}

// add adds a row without a target.
func (s *section) add(what, value string) { s.rows = append(s.rows, row{what: what, value: value}) }

// check adds a row held to a target; met says whether it is.
func (s *section) check(what, value, target string, met bool) {
	v := "met"
	if !met {
		v = "NOT met"
	}
	s.rows = append(s.rows, row{what, value, target, v})
}

func (s *section) note(format string, args ...any) {
	s.notes = append(s.notes, fmt.Sprintf(format, args...))
}

func (t *table) String() string {
	var b strings.Builder
	for _, n := range t.notes {
		b.WriteString(n + "\n")
	}
	// Sections are numbered in their titles and printed in that order,
	// whatever order they were measured in.
	sections := append([]*section(nil), t.sections...)
	sort.SliceStable(sections, func(i, j int) bool { return sections[i].title < sections[j].title })
	for _, s := range sections {
		fmt.Fprintf(&b, "\n### %s\n\n| measure | value | target | |\n|---|---|---|---|\n", s.title)
		for _, r := range s.rows {
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", r.what, r.value, r.target, r.verdict)
		}
		if len(s.notes) > 0 {
			b.WriteString("\n")
			for _, n := range s.notes {
				b.WriteString("- " + n + "\n")
			}
		}
	}
	return b.String()
}

// median returns the median of xs (the mean of the middle two for an even
// count).
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func medianDuration(ds []time.Duration) time.Duration {
	xs := make([]float64, len(ds))
	for i, d := range ds {
		xs[i] = float64(d)
	}
	return time.Duration(median(xs))
}

// rate formats records per second with thousands separators.
func rate(perSecond float64) string { return thousands(int64(perSecond+0.5)) + " rec/s" }

func thousands(n int64) string {
	s := fmt.Sprint(n)
	if n < 0 {
		return "-" + thousands(-n)
	}
	var out []byte
	for i := range s {
		if i > 0 && (len(s)-i)%3 == 0 {
			out = append(out, ' ')
		}
		out = append(out, s[i])
	}
	return string(out)
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func millis(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d.Microseconds())/1000) }

func micros(d time.Duration) string { return fmt.Sprintf("%.3f ms", float64(d.Nanoseconds())/1e6) }

func splitComma(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
