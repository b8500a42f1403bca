package config

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/streamtally/streamtally/aggregate"
	"go.yaml.in/yaml/v3"
)

var (
	daysRE   = regexp.MustCompile(`^(\d+)d(.*)$`)
	numberRE = regexp.MustCompile(`^[+-]?(\d+\.?\d*|\.\d+)([eE]([+-]?\d+))?$`)
	opNames  = "eq, ne, in, exists, gt, gte, lt, lte"
)

// ParseDuration reads a Go duration that may start with a number of days:
// 1d, 30d, 1d12h, as well as 90s, 1h, 15m.
func ParseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var days time.Duration
	if m := daysRE.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > 100_000 {
			return 0, fmt.Errorf("%q: too many days", s)
		}
		days = time.Duration(n) * 24 * time.Hour
		if m[2] == "" {
			return days, nil
		}
		s = m[2]
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration like 1m, 1h or 1d", s)
	}
	return days + d, nil
}

func (b *Bucket) parse(at string) (*aggregate.BucketSpec, error) {
	if b.Size == "" {
		return nil, errorf("%s.size: required, e.g. 1h", at)
	}
	size, err := ParseDuration(b.Size)
	switch {
	case err != nil:
		return nil, errorf("%s.size: %v", at, err)
	case size < time.Second || size%time.Second != 0:
		return nil, errorf("%s.size: %s is not a whole number of seconds, at least 1s", at, b.Size)
	}
	if b.Time == "" {
		return nil, errorf("%s.time: required: an attribute path, or %q for the record's stream time", at, aggregate.StreamTime)
	}
	if !pathRE.MatchString(b.Time) {
		return nil, errorf("%s.time: %q is not an attribute path", at, b.Time)
	}
	if b.Retention == "" {
		return nil, errorf("%s.retention: required, e.g. 30d", at)
	}
	ret, err := ParseDuration(b.Retention)
	switch {
	case err != nil:
		return nil, errorf("%s.retention: %v", at, err)
	case ret <= 0:
		return nil, errorf("%s.retention: must be positive, got %s", at, b.Retention)
	}
	return &aggregate.BucketSpec{Size: size, Retention: ret, Time: b.Time}, nil
}

// parseWhere parses each view's where from the file's YAML nodes: viper's
// copy has lowercased attribute names and numbers as floats, and a filter
// must compare exactly what was written.
func parseWhere(raw []byte, views []View) error {
	if len(raw) == 0 {
		return nil
	}
	var doc struct {
		Views []struct {
			Name  string    `yaml:"name"`
			Where yaml.Node `yaml:"where"`
		} `yaml:"views"`
	}
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return errorf("%s", oneLine(err))
	}
	if len(doc.Views) != len(views) {
		return nil
	}
	for i := range views {
		n := &doc.Views[i].Where
		if n.Kind == 0 {
			continue
		}
		at := fmt.Sprintf("views[%s].where", doc.Views[i].Name)
		conds, err := parseFilter(at, n)
		if err != nil {
			return err
		}
		views[i].Spec.Filter = conds
	}
	return nil
}

func parseFilter(at string, n *yaml.Node) ([]aggregate.Condition, error) {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return nil, nil
	}
	if n.Kind != yaml.MappingNode {
		return nil, errorf("%s: want a map from attribute path to a value or to operators", at)
	}
	var conds []aggregate.Condition
	for i := 0; i+1 < len(n.Content); i += 2 {
		attr, val := n.Content[i].Value, n.Content[i+1]
		here := at + "." + attr
		if !pathRE.MatchString(attr) {
			return nil, errorf("%s: %q is not an attribute path", at, attr)
		}
		switch val.Kind {
		case yaml.ScalarNode:
			op, err := operand(here, val)
			if err != nil {
				return nil, err
			}
			conds = append(conds, aggregate.Condition{Attr: attr, Op: aggregate.OpEq, Operands: []aggregate.Operand{op}})
		case yaml.SequenceNode:
			ops, err := operandList(here, val)
			if err != nil {
				return nil, err
			}
			conds = append(conds, aggregate.Condition{Attr: attr, Op: aggregate.OpIn, Operands: ops})
		case yaml.MappingNode:
			if len(val.Content) == 0 {
				return nil, errorf("%s: no operator (want %s)", here, opNames)
			}
			for j := 0; j+1 < len(val.Content); j += 2 {
				name, arg := val.Content[j].Value, val.Content[j+1]
				c, err := condition(here+"."+name, attr, name, arg)
				if err != nil {
					return nil, err
				}
				conds = append(conds, c)
			}
		default:
			return nil, errorf("%s: want a value, a list or operators", here)
		}
	}
	sort.SliceStable(conds, func(i, j int) bool { return conds[i].Attr < conds[j].Attr })
	return conds, nil
}

func condition(at, attr, op string, arg *yaml.Node) (aggregate.Condition, error) {
	c := aggregate.Condition{Attr: attr, Op: op}
	switch op {
	case aggregate.OpEq, aggregate.OpNe:
		if arg.Kind != yaml.ScalarNode {
			return c, errorf("%s: want one value", at)
		}
		o, err := operand(at, arg)
		if err != nil {
			return c, err
		}
		c.Operands = []aggregate.Operand{o}
	case aggregate.OpIn:
		if arg.Kind != yaml.SequenceNode {
			return c, errorf("%s: want a list of values", at)
		}
		ops, err := operandList(at, arg)
		if err != nil {
			return c, err
		}
		c.Operands = ops
	case aggregate.OpExists:
		if arg.Kind != yaml.ScalarNode || arg.Tag != "!!bool" {
			return c, errorf("%s: want true or false", at)
		}
		b, _ := strconv.ParseBool(strings.ToLower(arg.Value))
		c.Exists = b
	case aggregate.OpGt, aggregate.OpGte, aggregate.OpLt, aggregate.OpLte:
		if arg.Kind != yaml.ScalarNode {
			return c, errorf("%s: want one number or string", at)
		}
		o, err := operand(at, arg)
		if err != nil {
			return c, err
		}
		if o.Type == "BOOL" {
			return c, errorf("%s: booleans have no order; want a number or a string", at)
		}
		c.Operands = []aggregate.Operand{o}
	default:
		return c, errorf("%s: unknown operator (want %s; a nested attribute is a dotted path such as address.country)", at, opNames)
	}
	return c, nil
}

func operandList(at string, n *yaml.Node) ([]aggregate.Operand, error) {
	if len(n.Content) == 0 {
		return nil, errorf("%s: empty list", at)
	}
	ops := make([]aggregate.Operand, 0, len(n.Content))
	for _, e := range n.Content {
		if e.Kind != yaml.ScalarNode {
			return nil, errorf("%s: list elements must be values", at)
		}
		o, err := operand(at, e)
		if err != nil {
			return nil, err
		}
		ops = append(ops, o)
	}
	return ops, nil
}

// operand types a YAML scalar: an unquoted number compares with numbers
// (N), a quoted one with strings (S).
func operand(at string, n *yaml.Node) (aggregate.Operand, error) {
	switch n.Tag {
	case "!!str":
		return aggregate.Operand{Type: "S", Text: n.Value}, nil
	case "!!int", "!!float":
		if !exactNumber(n.Value) {
			return aggregate.Operand{}, errorf("%s: %q is not a number DynamoDB could store (quote it to compare as a string)", at, n.Value)
		}
		return aggregate.Operand{Type: "N", Text: n.Value}, nil
	case "!!bool":
		b, _ := strconv.ParseBool(strings.ToLower(n.Value))
		return aggregate.Operand{Type: "BOOL", Text: strconv.FormatBool(b)}, nil
	case "!!null":
		return aggregate.Operand{}, errorf("%s: null is not a value to compare; use exists: false for a missing attribute", at)
	}
	return aggregate.Operand{}, errorf("%s: %q is not a string, number or boolean", at, n.Value)
}

// exactNumber accepts decimal literals of at most 40 digits with an
// exponent within DynamoDB's range, which aggregate parses exactly.
func exactNumber(s string) bool {
	m := numberRE.FindStringSubmatch(s)
	if m == nil {
		return false
	}
	digits := 0
	for _, r := range m[1] {
		if r >= '0' && r <= '9' {
			digits++
		}
	}
	if digits > 40 {
		return false
	}
	if m[3] != "" {
		e, err := strconv.Atoi(m[3])
		if err != nil || e > 125 || e < -125 {
			return false
		}
	}
	return true
}
