package publish

import (
	"context"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
)

// Snapshot is a consistent view of all of one view's measures.
type Snapshot struct {
	View string `json:"view"`
	// Epoch names the history Version counts in: a version means the
	// same state only within one epoch.
	Epoch     string                       `json:"epoch"`
	Version   int64                        `json:"version"`
	UpdatedMS int64                        `json:"updated_ms"`
	Measures  map[string]map[string]string `json:"measures"`
	// Lost, when set, says why the view's counters are incomplete.
	Lost string `json:"lost,omitempty"`
}

// Snapshot reads every measure hash and the version of view in one
// MULTI/EXEC, so the numbers and the version belong together: no script
// can run between the reads.
func (r *Redis) Snapshot(ctx context.Context, view *aggregate.View) (*Snapshot, error) {
	k := KeysFor(r.prefix, view.Name)
	hashes := make([]*redis.MapStringStringCmd, len(view.Measures))
	var meta *redis.SliceCmd
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		meta = p.HMGet(ctx, k.Meta(), "version", "updated_ms", lostField, epochField)
		for i, m := range view.Measures {
			hashes[i] = p.HGetAll(ctx, k.Measure(m.Name))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot of view %s: %w", view.Name, err)
	}
	s := &Snapshot{View: view.Name, Measures: make(map[string]map[string]string, len(view.Measures))}
	vals := meta.Val()
	s.Version = atoi(vals[0])
	s.UpdatedMS = atoi(vals[1])
	s.Lost, _ = vals[2].(string)
	s.Epoch, _ = vals[3].(string)
	for i, m := range view.Measures {
		s.Measures[m.Name] = hashes[i].Val()
	}
	return s, nil
}

func atoi(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}

// Series is a consistent read of a bucketed view over a time range.
type Series struct {
	View      string `json:"view"`
	Epoch     string `json:"epoch"`
	Version   int64  `json:"version"`
	UpdatedMS int64  `json:"updated_ms"`
	From      string `json:"from"` // the first bucket start included, RFC 3339
	To        string `json:"to"`   // the first bucket start no longer included
	// Buckets maps each bucket start with items (RFC 3339, UTC) to its
	// measures: measure -> group key -> exact decimal string. JSON writes
	// the buckets in time order.
	Buckets map[string]map[string]map[string]string `json:"buckets"`
	Lost    string                                  `json:"lost,omitempty"`
}

// seriesAttempts bounds how often Series reads again because a bucket
// came or went between its look at the index and its transaction.
const seriesAttempts = 20

// Series reads the buckets of a bucketed view that start in [from, to),
// with the view's version, in one MULTI/EXEC: no script runs between the
// reads, so the numbers and the version belong together. The transaction
// reads the index again; if its buckets differ from those the transaction
// was built for, Series reads again.
func (r *Redis) Series(ctx context.Context, view *aggregate.View, from, to time.Time) (*Series, error) {
	if !view.Bucketed() {
		return nil, fmt.Errorf("series of view %s: the view has no buckets", view.Name)
	}
	// Buckets start on whole seconds: s >= from and s < to hold for the
	// same s as with both rounded up to the second.
	lo, hi := ceilUnix(from), ceilUnix(to)
	rng := &redis.ZRangeBy{Min: strconv.FormatInt(lo, 10), Max: "(" + strconv.FormatInt(max(lo, hi), 10)}
	s, _, _, err := r.series(ctx, view, rng, false)
	if err != nil {
		return nil, err
	}
	s.From, s.To = from.UTC().Format(time.RFC3339), to.UTC().Format(time.RFC3339)
	return s, nil
}

// SeriesWithFences reads every bucket a bucketed view holds, with its meta
// hash (the fences the numbers belong to) and Redis's clock, in one
// MULTI/EXEC. From and To are left empty.
func (r *Redis) SeriesWithFences(ctx context.Context, view *aggregate.View) (*Series, *Meta, time.Time, error) {
	if !view.Bucketed() {
		return nil, nil, time.Time{}, fmt.Errorf("series of view %s: the view has no buckets", view.Name)
	}
	s, fields, now, err := r.series(ctx, view, everyBucket, true)
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	return s, parseMeta(fields), now, nil
}

// series reads the buckets of the index in rng with the whole meta hash,
// and with clock the server's clock (not in the daemon's ACL), in one
// MULTI/EXEC. The transaction reads the
// index again; if its buckets differ from those the transaction was built
// for, series reads again.
func (r *Redis) series(ctx context.Context, view *aggregate.View, rng *redis.ZRangeBy, withClock bool) (*Series, map[string]string, time.Time, error) {
	k := KeysFor(r.prefix, view.Name)
	names, err := r.client.ZRangeByScore(ctx, k.Buckets(), rng).Result()
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("series of view %s: %w", view.Name, err)
	}
	for range seriesAttempts {
		var meta *redis.MapStringStringCmd
		var clock *redis.TimeCmd
		var index *redis.StringSliceCmd
		hashes := make([][]*redis.MapStringStringCmd, len(names))
		_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
			meta = p.HGetAll(ctx, k.Meta())
			if withClock {
				clock = p.Time(ctx)
			}
			index = p.ZRangeByScore(ctx, k.Buckets(), rng)
			for i, b := range names {
				hashes[i] = make([]*redis.MapStringStringCmd, len(view.Measures))
				for j, m := range view.Measures {
					hashes[i][j] = p.HGetAll(ctx, k.BucketMeasure(b, m.Name))
				}
			}
			return nil
		})
		if err != nil {
			return nil, nil, time.Time{}, fmt.Errorf("series of view %s: %w", view.Name, err)
		}
		if now := index.Val(); !slices.Equal(now, names) {
			names = now
			continue
		}
		s := &Series{View: view.Name, Buckets: map[string]map[string]map[string]string{}}
		fields := meta.Val()
		s.Version = atoi(fields["version"])
		s.UpdatedMS = atoi(fields["updated_ms"])
		s.Epoch = fields[epochField]
		s.Lost = fields[lostField]
		for i, b := range names {
			ms := make(map[string]map[string]string, len(view.Measures))
			empty := true
			for j, m := range view.Measures {
				ms[m.Name] = hashes[i][j].Val()
				empty = empty && len(ms[m.Name]) == 0
			}
			// An expired bucket stays in the index until the next apply
			// prunes it; its hashes are gone.
			if !empty {
				s.Buckets[b] = ms
			}
		}
		var now time.Time
		if clock != nil {
			now = clock.Val()
		}
		return s, fields, now, nil
	}
	return nil, nil, time.Time{}, fmt.Errorf("series of view %s: its buckets kept changing over %d reads", view.Name, seriesAttempts)
}

func ceilUnix(t time.Time) int64 {
	if t.Nanosecond() > 0 {
		return t.Unix() + 1
	}
	return t.Unix()
}
