package aggregate

import (
	"slices"
	"strings"

	"github.com/streamtally/streamtally"
)

// Measure is one measure of a compiled view.
type Measure struct {
	Name string
	Kind string // the function: Count, Sum
	Attr string // the dotted attribute path, for a function of an attribute

	fn valueFunc // nil for Count, whose value is the group's item count
}

// valueFunc computes a measure that has a value of its own. Every such
// measure is invertible: an image's value leaves the group exactly as it
// came, so a group's state is one exact decimal per measure (a slot of
// Counters.Sums), a delete subtracts what the insert added, and the store
// applies it as a sum. A measure that cannot be subtracted (min, max,
// distinct counts) needs state beyond one number and a store that keeps
// it; see docs/ARCHITECTURE.md, "How to add".
type valueFunc interface {
	// value is what img adds to its group, or why it adds nothing.
	value(img streamtally.Image) (Decimal, Reason, bool)
}

// functions are the measure functions of a view of an attribute, by name.
var functions = map[string]func(attr string) valueFunc{
	Sum: newSum,
}

// Function reports whether name is a measure function and whether it
// takes an attribute: count takes none, sum(attr) one.
func Function(name string) (known, takesAttr bool) {
	if name == Count {
		return true, false
	}
	_, ok := functions[name]
	return ok, ok
}

// Functions lists the measure functions as a user writes them, sorted:
// "count", "sum(<attribute>)".
func Functions() []string {
	out := []string{Count}
	for name := range functions {
		out = append(out, name+"(<attribute>)")
	}
	slices.Sort(out)
	return out
}

func compileMeasure(m MeasureSpec) Measure {
	mm := Measure{Name: m.Name, Kind: m.Func, Attr: m.Attr}
	if f, ok := functions[m.Func]; ok {
		mm.fn = f(m.Attr)
	}
	return mm
}

// sum adds up a number attribute, exactly.
type sum struct {
	attr string
	path []string
}

func newSum(attr string) valueFunc { return sum{attr, strings.Split(attr, ".")} }

func (s sum) value(img streamtally.Image) (Decimal, Reason, bool) {
	av, ok := lookup(img, s.path)
	if !ok {
		return Decimal{}, Reason{MissingSum, "missing summed attribute " + s.attr}, false
	}
	n, ok := av.(*streamtally.N)
	if !ok {
		return Decimal{}, Reason{BadSum, "summed attribute " + s.attr + " is " + typeName(av) + ", not a number"}, false
	}
	d, err := ParseNumber(n.Value)
	if err != nil {
		return Decimal{}, Reason{BadNumber, "summed attribute " + s.attr + ": " + err.Error()}, false
	}
	return d, Reason{}, true
}
