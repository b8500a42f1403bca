package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/publish"
)

// seriesBuckets is how many buckets, up to the current one, a series
// shows without --from.
const seriesBuckets = 24

func cmdSnapshot(ctx context.Context, args []string, stdout io.Writer) error {
	var viewName, fromText, toText string
	cfg, err := loadConfig("snapshot", args, func(fs *flag.FlagSet) {
		fs.StringVar(&viewName, "view", "", "view name")
		fs.StringVar(&fromText, "from", "", "bucketed views: first time of the series, RFC 3339 (default: 23 buckets before the current one)")
		fs.StringVar(&toText, "to", "", "bucketed views: end of the series, RFC 3339, exclusive (default: the end of the current bucket)")
	})
	if err != nil {
		return err
	}
	var view *aggregate.View
	for _, v := range aggregate.NewViews(cfg.Specs()) {
		if v.Name == viewName {
			view = v
		}
	}
	if view == nil {
		return usageError(fmt.Sprintf("snapshot: --view %q is not a view of the configuration", viewName))
	}
	var from, to time.Time
	if view.Bucketed() {
		if from, to, err = seriesRange(view, fromText, toText, time.Now()); err != nil {
			return err
		}
	} else if fromText != "" || toText != "" {
		return usageError(fmt.Sprintf("snapshot: --from and --to are for bucketed views; view %s has no buckets", view.Name))
	}
	rdb, err := newRedis(cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	store := publish.NewRedis(rdb, cfg.Redis.Prefix, nil)
	var out any
	var lost string
	if view.Bucketed() {
		s, err := store.Series(ctx, view, from, to)
		if err != nil {
			return err
		}
		out, lost = s, s.Lost
	} else {
		snap, err := store.Snapshot(ctx, view)
		if err != nil {
			return err
		}
		out, lost = snap, snap.Lost
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(out); err != nil {
		return err
	}
	if lost != "" {
		return fmt.Errorf("view %s is lost, its counters are incomplete: %s", view.Name, lost)
	}
	return nil
}

// seriesRange resolves --from and --to. Both default around the bucket
// holding now: the series ends with it and spans seriesBuckets buckets.
func seriesRange(v *aggregate.View, fromText, toText string, now time.Time) (from, to time.Time, err error) {
	parse := func(flag, s string) (time.Time, error) {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return t, usageError(fmt.Sprintf("snapshot: --%s %q is not an RFC 3339 time such as 2026-11-29T00:00:00Z", flag, s))
		}
		return t, nil
	}
	to = time.Unix(v.BucketOf(now), 0).Add(v.BucketSize())
	if toText != "" {
		if to, err = parse("to", toText); err != nil {
			return from, to, err
		}
	}
	from = time.Unix(v.BucketOf(to.Add(-time.Nanosecond)), 0).Add(-(seriesBuckets - 1) * v.BucketSize())
	if fromText != "" {
		if from, err = parse("from", fromText); err != nil {
			return from, to, err
		}
	}
	if !from.Before(to) {
		return from, to, usageError(fmt.Sprintf("snapshot: --from %s is not before --to %s", from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339)))
	}
	return from.UTC(), to.UTC(), nil
}
