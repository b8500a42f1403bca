package aggregate

import (
	"strings"

	"github.com/streamtally/streamtally"
)

// condition is one compiled comparison of a view's where.
type condition struct {
	path     []string
	op       string
	operands []operand
	exists   bool
}

// operand is a filter value, typed like the attributes it can equal.
type operand struct {
	typ string // "S", "N" or "BOOL"
	s   string
	n   Decimal
	b   bool
}

func compileFilter(cs []Condition) []condition {
	out := make([]condition, 0, len(cs))
	for _, c := range cs {
		cc := condition{path: strings.Split(c.Attr, "."), op: c.Op, exists: c.Exists}
		for _, o := range c.Operands {
			op := operand{typ: o.Type, s: o.Text, b: o.Text == "true"}
			if o.Type == "N" {
				// config accepted only numbers ParseDecimal reads.
				op.n = MustDecimal(o.Text)
			}
			cc.operands = append(cc.operands, op)
		}
		out = append(out, cc)
	}
	return out
}

// matches reports whether img passes every condition. A missing attribute
// fails every comparison but exists: false; an attribute of another type
// than the operand is never equal, greater or less, so only ne holds for
// it. Numbers compare exactly as decimals (10.5 equals 10.50), strings
// bytewise.
func matches(filter []condition, img streamtally.Image) bool {
	for i := range filter {
		c := &filter[i]
		av, ok := lookup(img, c.path)
		if c.op == OpExists {
			if ok != c.exists {
				return false
			}
			continue
		}
		if !ok {
			return false
		}
		var pass bool
		switch c.op {
		case OpEq:
			pass = compare(av, c.operands[0]) == cmpEqual
		case OpNe:
			pass = compare(av, c.operands[0]) != cmpEqual
		case OpIn:
			for _, o := range c.operands {
				if compare(av, o) == cmpEqual {
					pass = true
					break
				}
			}
		case OpGt:
			pass = compare(av, c.operands[0]) == cmpGreater
		case OpGte:
			r := compare(av, c.operands[0])
			pass = r == cmpGreater || r == cmpEqual
		case OpLt:
			pass = compare(av, c.operands[0]) == cmpLess
		case OpLte:
			r := compare(av, c.operands[0])
			pass = r == cmpLess || r == cmpEqual
		}
		if !pass {
			return false
		}
	}
	return true
}

type cmpResult int

const (
	cmpIncomparable cmpResult = iota // other types, or a number DynamoDB could not store
	cmpLess
	cmpEqual
	cmpGreater
)

// compare orders an attribute against an operand of the same type.
func compare(av streamtally.Value, o operand) cmpResult {
	switch a := av.(type) {
	case *streamtally.S:
		if o.typ == "S" {
			return order(strings.Compare(a.Value, o.s))
		}
	case *streamtally.N:
		if o.typ == "N" {
			d, err := ParseNumber(a.Value)
			if err != nil {
				return cmpIncomparable
			}
			return order(d.Cmp(o.n))
		}
	case *streamtally.Bool:
		if o.typ == "BOOL" && a.Value == o.b {
			return cmpEqual
		}
	}
	return cmpIncomparable
}

func order(c int) cmpResult {
	switch {
	case c < 0:
		return cmpLess
	case c > 0:
		return cmpGreater
	}
	return cmpEqual
}
