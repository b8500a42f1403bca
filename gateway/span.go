package gateway

import (
	"context"
	"fmt"
	"net/url"
	"strconv"
	"time"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/publish"
)

// seriesBuckets is how many buckets, up to the current one, a bucketed
// view shows without ?from=, as `streamtally snapshot` does.
const seriesBuckets = 24

// openEnd stands for a range without an end: the last time a bucket can
// start in (aggregate reads years up to 9999).
var openEnd = time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)

// span is the range of buckets a client of a bucketed view reads: those
// starting in [from, to). A stream without ?to= is open-ended, so that it
// follows the buckets that begin while it runs; a client applies the
// deltas of buckets from from on and ignores older ones.
type span struct {
	from, to time.Time // to is zero when open-ended
}

func (s span) key() string {
	return strconv.FormatInt(s.from.UnixNano(), 10) + "/" + strconv.FormatInt(s.to.UnixNano(), 10)
}

// liveSpan is a stream's default range at now: from 23 buckets before the
// current one, open-ended. Every client on defaults shares its snapshot.
func liveSpan(v *aggregate.View, now time.Time) span {
	cur := time.Unix(v.BucketOf(now), 0).UTC()
	return span{from: cur.Add(-(seriesBuckets - 1) * v.BucketSize())}
}

// parseSpan reads ?from= and ?to= (RFC 3339). Without from, the range
// starts 23 buckets before the bucket that ends it; without to it ends
// with the current bucket, or, for a stream, stays open. live reports
// that both were left out on a stream.
func parseSpan(v *aggregate.View, q url.Values, now time.Time, stream bool) (sp span, live bool, err error) {
	fromText, toText := q.Get("from"), q.Get("to")
	if !v.Bucketed() {
		if fromText != "" || toText != "" {
			return sp, false, fmt.Errorf("from and to are for bucketed views; view %s has no buckets", v.Name)
		}
		return sp, false, nil
	}
	parse := func(name, s string) (time.Time, error) {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil || t.Year() < 1 || t.Year() > 9999 {
			return t, fmt.Errorf("%s %q is not an RFC 3339 time such as 2026-11-29T00:00:00Z", name, s)
		}
		return t.UTC(), nil
	}
	if stream && fromText == "" && toText == "" {
		return liveSpan(v, now), true, nil
	}
	last := now // a time in the last bucket of the range
	if toText != "" {
		if sp.to, err = parse("to", toText); err != nil {
			return sp, false, err
		}
		last = sp.to.Add(-time.Nanosecond)
	} else if !stream {
		sp.to = time.Unix(v.BucketOf(now), 0).Add(v.BucketSize()).UTC()
	}
	sp.from = time.Unix(v.BucketOf(last), 0).Add(-(seriesBuckets - 1) * v.BucketSize()).UTC()
	if fromText != "" {
		if sp.from, err = parse("from", fromText); err != nil {
			return sp, false, err
		}
	}
	if !sp.to.IsZero() && !sp.from.Before(sp.to) {
		return sp, false, fmt.Errorf("from %s is not before to %s", sp.from.Format(time.RFC3339), sp.to.Format(time.RFC3339))
	}
	return sp, false, nil
}

// series reads the buckets of sp; an open end reads as "to":"".
func series(ctx context.Context, store *publish.Redis, v *aggregate.View, sp span) (*publish.Series, error) {
	to := sp.to
	if to.IsZero() {
		to = openEnd
	}
	s, err := store.Series(ctx, v, sp.from, to)
	if err != nil {
		return nil, err
	}
	if sp.to.IsZero() {
		s.To = ""
	}
	return s, nil
}
