package aggregate

import (
	"fmt"
	"math/big"
	"strings"
	"time"

	"github.com/streamtally/streamtally"
)

// bucketing is a compiled bucket definition.
type bucketing struct {
	sizeMS, retentionMS int64
	time                []string // attribute path; nil for stream time
	attr                string
}

// The range of times a bucket can start in: RFC 3339 writes years 0001
// to 9999.
var (
	minTimeMS = time.Date(1, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	maxTimeMS = time.Date(9999, 12, 31, 23, 59, 59, 999e6, time.UTC).UnixMilli()
)

// epochMSFrom is the smallest magnitude of an epoch number read as
// milliseconds rather than seconds: 1e11 seconds is in the year 5138,
// 1e11 ms in 1973.
var epochMSFrom = big.NewRat(100_000_000_000, 1)

func compileBucket(b *BucketSpec) *bucketing {
	if b == nil {
		return nil
	}
	bk := &bucketing{sizeMS: b.Size.Milliseconds(), retentionMS: b.Retention.Milliseconds(), attr: b.Time}
	if bk.retentionMS == 0 {
		bk.retentionMS = 1 // config allows sub-millisecond retentions; keep them positive
	}
	if b.Time != StreamTime {
		bk.time = strings.Split(b.Time, ".")
	}
	return bk
}

// Bucketed reports whether the view keeps one set of counters per time
// bucket.
func (v *View) Bucketed() bool { return v.bucket != nil }

// StreamTimed reports whether the view's buckets come from the records'
// ApproximateCreationDateTime rather than an attribute of the item.
func (v *View) StreamTimed() bool { return v.bucket != nil && v.bucket.time == nil }

// Recomputable reports whether a table scan can recompute the view: a
// contribution that is a pure function of the image. A stream-time view
// is not: its buckets hold the changes the stream recorded in each period,
// which no scan of the current items can tell.
func (v *View) Recomputable() bool { return !v.StreamTimed() }

// BucketSize is the width of the view's buckets; 0 for a view without.
func (v *View) BucketSize() time.Duration {
	if v.bucket == nil {
		return 0
	}
	return time.Duration(v.bucket.sizeMS) * time.Millisecond
}

// Retention is how long a bucket is kept after it ends; 0 for a view
// without buckets.
func (v *View) Retention() time.Duration {
	if v.bucket == nil {
		return 0
	}
	return time.Duration(v.bucket.retentionMS) * time.Millisecond
}

// BucketOf returns the start, in Unix seconds, of the bucket holding t:
// buckets are aligned to multiples of the size since the Unix epoch, UTC.
func (v *View) BucketOf(t time.Time) int64 { return v.bucketOfMS(t.UnixMilli()) }

func (v *View) bucketOfMS(ms int64) int64 {
	s := v.bucket.sizeMS
	start := ms / s * s
	if ms%s < 0 {
		start -= s
	}
	return start / 1000
}

// BucketExpiry is when the bucket starting at start (Unix seconds) is
// dropped: its end plus the retention.
func (v *View) BucketExpiry(start int64) time.Time {
	return time.UnixMilli(start*1000 + v.bucket.sizeMS + v.bucket.retentionMS).UTC()
}

// expired reports whether the bucket starting at start is past its
// retention at nowMS: it must be neither added to nor subtracted from,
// which would bring it back with partial numbers.
func (v *View) expired(start, nowMS int64) bool {
	return start*1000+v.bucket.sizeMS+v.bucket.retentionMS <= nowMS
}

// BucketName renders a bucket start (Unix seconds) as it appears in Redis
// keys and messages: RFC 3339 in UTC, e.g. 2026-11-29T19:00:00Z.
func BucketName(start int64) string {
	return time.Unix(start, 0).UTC().Format(time.RFC3339)
}

// SetClock replaces the clock that decides which buckets are past their
// retention; for tests.
func (v *View) SetClock(now func() time.Time) { v.now = now }

// itemTime reads the bucket time attribute of an image as Unix ms.
func (v *View) itemTime(img streamtally.Image) (int64, Reason, bool) {
	b := v.bucket
	av, ok := lookup(img, b.time)
	if !ok {
		return 0, Reason{MissingTime, "missing time attribute " + b.attr}, false
	}
	ms, err := parseTime(av)
	if err != nil {
		return 0, Reason{BadTime, "time attribute " + b.attr + ": " + err.Error()}, false
	}
	return ms, Reason{}, true
}

// timeLayouts are the ISO 8601 forms a time attribute may take. A time
// without an offset is UTC.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999",
	"2006-01-02T15:04Z07:00",
	"2006-01-02T15:04",
	"2006-01-02",
}

// parseTime reads a time attribute: an ISO 8601 string, or a number of
// seconds or milliseconds since the Unix epoch (magnitudes from 1e11 up are
// milliseconds). Numbers are read exactly and rounded down to the
// millisecond.
func parseTime(av streamtally.Value) (int64, error) {
	var ms int64
	switch a := av.(type) {
	case *streamtally.S:
		var t time.Time
		var err error
		for _, l := range timeLayouts {
			if t, err = time.Parse(l, a.Value); err == nil {
				break
			}
		}
		if err != nil {
			return 0, fmt.Errorf("%q is not an ISO 8601 time", a.Value)
		}
		if y := t.UTC().Year(); y < 1 || y > 9999 {
			return 0, fmt.Errorf("%q is outside the years 0001 to 9999", a.Value)
		}
		ms = t.UnixMilli()
	case *streamtally.N:
		d, err := ParseNumber(a.Value)
		if err != nil {
			return 0, err
		}
		r, ok := new(big.Rat).SetString(d.String())
		if !ok {
			return 0, fmt.Errorf("%q is not a number", a.Value)
		}
		if new(big.Rat).Abs(r).Cmp(epochMSFrom) < 0 {
			r.Mul(r, big.NewRat(1000, 1))
		}
		// Div is Euclidean, which for a positive divisor rounds down.
		q := new(big.Int).Div(r.Num(), r.Denom())
		if !q.IsInt64() || q.Int64() < minTimeMS || q.Int64() > maxTimeMS {
			return 0, fmt.Errorf("epoch time %s is outside the years 0001 to 9999", a.Value)
		}
		ms = q.Int64()
	default:
		return 0, fmt.Errorf("has type %s, want an ISO 8601 string or epoch seconds or milliseconds", typeName(av))
	}
	if ms < minTimeMS || ms > maxTimeMS {
		return 0, fmt.Errorf("outside the years 0001 to 9999")
	}
	return ms, nil
}

// Unbucketed returns v without its buckets: the same groups, measures and
// filter over all time. A stream-time view's buckets, summed while none
// has expired, telescope to it, which is how a scan can check one.
func (v *View) Unbucketed() *View {
	u := *v
	u.bucket = nil
	return &u
}
