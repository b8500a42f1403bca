package aggregate

import "time"

// Spec is a view definition: what config parses a view into, and all the
// fold needs to compile it. A Spec is valid once config has checked it.
type Spec struct {
	Name     string
	GroupBy  []string      // dotted attribute paths
	Measures []MeasureSpec // sorted by name
	Filter   []Condition   // every condition must hold; sorted by attribute path
	Bucket   *BucketSpec   // nil: one set of totals
}

// MeasureSpec is one measure of a view.
type MeasureSpec struct {
	Name string
	Func string // Count or Sum
	Attr string // dotted attribute path, for Sum
}

// Measure functions.
const (
	Count = "count"
	Sum   = "sum"
)

// BucketSpec makes a view a time series: one set of counters per bucket.
type BucketSpec struct {
	Size      time.Duration // whole seconds, at least 1s
	Retention time.Duration
	Time      string // attribute path, or StreamTime
}

// StreamTime is the bucket time that means the record's creation time in
// the stream (ApproximateCreationDateTime) instead of an attribute.
const StreamTime = "stream"

// Condition is one comparison of a filter.
type Condition struct {
	Attr     string    // dotted attribute path
	Op       string    // one of the Op constants
	Operands []Operand // one, or several for OpIn; none for OpExists
	Exists   bool      // for OpExists
}

// Filter operators.
const (
	OpEq     = "eq"
	OpNe     = "ne"
	OpIn     = "in"
	OpExists = "exists"
	OpGt     = "gt"
	OpGte    = "gte"
	OpLt     = "lt"
	OpLte    = "lte"
)

// Operand is a filter value with the DynamoDB type it compares with.
type Operand struct {
	Type string // "S", "N" or "BOOL"
	Text string // as written; for N a number DynamoDB could store
}
