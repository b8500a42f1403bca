package config

import (
	"testing"

	"github.com/streamtally/streamtally/aggregate"
)

// Measures are parsed by name against aggregate's functions, so a new
// function needs no change here; what is not a known function with the
// right arity is refused.
func TestParseMeasureKnowsTheFunctionsAggregateHas(t *testing.T) {
	for _, c := range []struct {
		text string
		want aggregate.MeasureSpec
		ok   bool
	}{
		{"count", aggregate.MeasureSpec{Name: "m", Func: aggregate.Count}, true},
		{"sum(amount)", aggregate.MeasureSpec{Name: "m", Func: aggregate.Sum, Attr: "amount"}, true},
		{"sum( gift.amount )", aggregate.MeasureSpec{Name: "m", Func: aggregate.Sum, Attr: "gift.amount"}, true},
		{"sum", aggregate.MeasureSpec{}, false},
		{"sum()", aggregate.MeasureSpec{}, false},
		{"sum(a b)", aggregate.MeasureSpec{}, false},
		{"sum(a..b)", aggregate.MeasureSpec{}, false},
		{"count(amount)", aggregate.MeasureSpec{}, false},
		{"avg(amount)", aggregate.MeasureSpec{}, false},
		{"SUM(amount)", aggregate.MeasureSpec{}, false},
	} {
		got, ok := parseMeasure("m", c.text)
		if ok != c.ok || got != c.want {
			t.Errorf("parseMeasure(%q) = %+v, %v; want %+v, %v", c.text, got, ok, c.want, c.ok)
		}
	}
	if got, want := aggregate.Functions(), []string{"count", "sum(<attribute>)"}; len(got) != 2 || got[0] != want[0] || got[1] != want[1] {
		t.Errorf("Functions() = %q, want %q", got, want)
	}
}
