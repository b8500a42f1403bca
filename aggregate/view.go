// Package aggregate folds change records into per-view deltas.
//
// A view groups items by one or more attributes and keeps measures per
// group. Every item contributes to at most one group of a view: INSERT adds
// the new image's contribution, REMOVE subtracts the old image's, MODIFY
// does both. Because a contribution is a pure function of an image, the sum
// of all contributions equals what a full scan of the table would give.
package aggregate

import (
	"strings"
	"time"

	"github.com/streamtally/streamtally"
)

// View is a compiled view definition.
type View struct {
	Name     string
	Measures []Measure // sorted by name

	groupBy [][]string
	sums    []int // indexes into Measures of the measures with a value of their own, in order
	filter  []condition
	bucket  *bucketing // nil: one set of totals
	now     func() time.Time
}

// NewView compiles a validated view definition.
func NewView(c Spec) *View {
	v := &View{Name: c.Name, filter: compileFilter(c.Filter), bucket: compileBucket(c.Bucket), now: time.Now}
	for _, g := range c.GroupBy {
		v.groupBy = append(v.groupBy, strings.Split(g, "."))
	}
	for _, m := range c.Measures {
		mm := compileMeasure(m)
		if mm.fn != nil {
			v.sums = append(v.sums, len(v.Measures))
		}
		v.Measures = append(v.Measures, mm)
	}
	return v
}

// NewViews compiles every view of a configuration.
func NewViews(cs []Spec) []*View {
	vs := make([]*View, len(cs))
	for i, c := range cs {
		vs[i] = NewView(c)
	}
	return vs
}

// SumCount is how many measures have a value of their own (every one but
// count); Counters.Sums has this length.
func (v *View) SumCount() int { return len(v.sums) }

// SumIndex maps the i-th measure to its slot in Counters.Sums, or -1 for
// a count measure, whose value is the group's item count. A store keeps
// the two kinds apart by it.
func (v *View) SumIndex(i int) int {
	for j, m := range v.sums {
		if m == i {
			return j
		}
	}
	return -1
}

// Contribution is what one image adds to a view: one item in one group of
// one bucket and a value per sum measure.
type Contribution struct {
	// Bucket is the start of the item's time bucket in Unix seconds, for a
	// bucketed view whose time is an attribute. For a stream-time view the
	// bucket is the record's, not the image's: Fold sets it.
	Bucket int64
	Group  string
	Sums   []Decimal
}

// Contribute computes an image's contribution, from the image alone. An
// image that fails the view's filter, lacks a group_by attribute, the time
// attribute or a summed number contributes nothing; the returned reason
// says why.
func (v *View) Contribute(img streamtally.Image) (Contribution, Reason, bool) {
	if v.filter != nil && !matches(v.filter, img) {
		return Contribution{}, Reason{Filtered, "does not match the view's where"}, false
	}
	var bucket int64
	if v.bucket != nil && v.bucket.time != nil {
		ms, reason, ok := v.itemTime(img)
		if !ok {
			return Contribution{}, reason, false
		}
		bucket = v.bucketOfMS(ms)
	}
	var b strings.Builder
	for i, path := range v.groupBy {
		av, ok := lookup(img, path)
		if !ok {
			return Contribution{}, Reason{MissingGroupBy, "missing group_by attribute " + strings.Join(path, ".")}, false
		}
		text, reason, ok := groupText(strings.Join(path, "."), av)
		if !ok {
			return Contribution{}, reason, false
		}
		if i > 0 {
			b.WriteByte('|')
		}
		writeEscaped(&b, text)
	}
	c := Contribution{Bucket: bucket, Group: b.String()}
	if len(v.sums) > 0 {
		c.Sums = make([]Decimal, len(v.sums))
	}
	for j, mi := range v.sums {
		d, reason, ok := v.Measures[mi].fn.value(img)
		if !ok {
			return Contribution{}, reason, false
		}
		c.Sums[j] = d
	}
	return c, Reason{}, true
}

// Reason says why an image contributes nothing: Kind is a short label for
// metrics, Text the line for the log.
type Reason struct{ Kind, Text string }

// Reason kinds. The missing ones say the item lies outside the view:
// DynamoDB items are sparse, and one table often holds several kinds of
// item. The others say the item claims a place in the view with data the
// view cannot use: those are dead letters.
const (
	MissingGroupBy = "missing_group_by" // a group_by attribute is absent
	MissingSum     = "missing_sum"      // a summed attribute is absent
	BadGroupBy     = "bad_group_by"     // a group_by attribute is not S, N or BOOL
	BadSum         = "bad_sum"          // a summed attribute is not N
	BadNumber      = "bad_number"       // an N that is not a number DynamoDB could store
	BadRecord      = "bad_record"       // the record cannot be read: an image that is not DynamoDB JSON, a missing image, an unknown event
	MissingTime    = "missing_time"     // the bucket time attribute is absent
	BadTime        = "bad_time"         // the bucket time is not a time: not ISO 8601 or epoch seconds/ms, or the record has no creation time
	// Filtered says the item does not match the view's where. Fold never
	// reports it: a filter is there to leave items out.
	Filtered = "filtered"
)

// IsDeadLetter reports whether a rejection of this kind is bad data, to be
// set aside, rather than an item outside the view.
func IsDeadLetter(kind string) bool {
	return kind != MissingGroupBy && kind != MissingSum && kind != MissingTime && kind != Filtered
}

func lookup(img streamtally.Image, path []string) (streamtally.Value, bool) {
	av, ok := img[path[0]]
	for _, p := range path[1:] {
		if !ok {
			return nil, false
		}
		m, isMap := av.(*streamtally.M)
		if !isMap {
			return nil, false
		}
		av, ok = m.Value[p]
	}
	return av, ok && av != nil
}

// groupText renders the group_by value at path as text. Only scalars make
// sensible groups; sets, lists, maps, binary and NULL are rejected.
func groupText(path string, av streamtally.Value) (string, Reason, bool) {
	switch a := av.(type) {
	case *streamtally.S:
		return a.Value, Reason{}, true
	case *streamtally.N:
		d, err := ParseNumber(a.Value)
		if err != nil {
			return "", Reason{BadNumber, "group_by attribute " + path + ": " + err.Error()}, false
		}
		return d.String(), Reason{}, true
	case *streamtally.Bool:
		if a.Value {
			return "true", Reason{}, true
		}
		return "false", Reason{}, true
	}
	return "", Reason{BadGroupBy, "group_by attribute " + path + " has unsupported type " + typeName(av)}, false
}

func typeName(av streamtally.Value) string {
	switch av.(type) {
	case *streamtally.S:
		return "S"
	case *streamtally.N:
		return "N"
	case *streamtally.B:
		return "B"
	case *streamtally.Bool:
		return "BOOL"
	case *streamtally.Null:
		return "NULL"
	case *streamtally.M:
		return "M"
	case *streamtally.L:
		return "L"
	case *streamtally.SS:
		return "SS"
	case *streamtally.NS:
		return "NS"
	case *streamtally.BS:
		return "BS"
	}
	return "unknown"
}

// writeEscaped writes a group_by value so that '|' can join several of
// them unambiguously: '|' and '\' inside a value get a '\' before them.
func writeEscaped(b *strings.Builder, s string) {
	if !strings.ContainsAny(s, `|\`) {
		b.WriteString(s)
		return
	}
	for i := 0; i < len(s); i++ {
		if s[i] == '|' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
}

// SplitGroup splits a group key back into its group_by values.
func SplitGroup(key string) []string {
	var out []string
	var cur strings.Builder
	for i := 0; i < len(key); i++ {
		switch c := key[i]; {
		case c == '\\' && i+1 < len(key):
			i++
			cur.WriteByte(key[i])
		case c == '|':
			out = append(out, cur.String())
			cur.Reset()
		default:
			cur.WriteByte(c)
		}
	}
	return append(out, cur.String())
}
