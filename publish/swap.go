package publish

import (
	"context"
	_ "embed"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
)

// A rebuild writes a view's recount into fresh keys beside the live ones,
// holds the view while it catches up with the stream, and swaps the fresh
// keys in with one script: readers see the old numbers or the new ones.

//go:embed swap.lua
var swapSource string

var swapScript = redis.NewScript(swapSource)

//go:embed swap_buckets.lua
var swapBucketsSource string

var swapBucketsScript = redis.NewScript(swapBucketsSource)

// holdScript sets the hold with a deadline on Redis's own clock (the apply
// script compares with that clock) and returns the meta hash as it is
// then: the fences no daemon can move while the hold lasts.
var holdScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('HSET', KEYS[1], 'hold', ARGV[1] .. ':' .. (now + tonumber(ARGV[2])))
return redis.call('HGETALL', KEYS[1])
`)

// releaseScript drops the hold if it is still ours.
var releaseScript = redis.NewScript(`
local hold = redis.call('HGET', KEYS[1], 'hold') or ''
if string.sub(hold, 1, #ARGV[1] + 1) == ARGV[1] .. ':' then
  redis.call('HDEL', KEYS[1], 'hold')
end
return 0
`)

const (
	nextInfix = "_next:"
	holdField = "hold"
	// nextChunk bounds the fields written per HSET, so that no single
	// command blocks Redis for long.
	nextChunk = 1000
)

// Next is the fresh hash that a rebuild fills for the hash named suffix (a
// measure, or the item counts), in the view's hash slot.
func (k Keys) Next(suffix string) string { return k.Measure(nextInfix + suffix) }

// NextBucketMeasure is the fresh hash of one measure (or the item counts)
// of one bucket of a bucketed view.
func (k Keys) NextBucketMeasure(bucket, suffix string) string { return k.Next(bucket + ":" + suffix) }

// NextBuckets lists, as a sorted set like the index, every bucket a
// rebuild has written fresh hashes for: the swap and the next run's
// cleanup find them there (a cluster offers no SCAN of one slot).
func (k Keys) NextBuckets() string { return k.Next(bucketsSuffix) }

// everyBucket ranges over a whole bucket index, with ZRANGEBYSCORE, which
// readers may send already.
var everyBucket = &redis.ZRangeBy{Min: "-inf", Max: "+inf"}

// Meta is what a view's meta hash says about its state.
type Meta struct {
	Exists bool
	Lost   string
	Hold   string
	Fences map[string]string // shard -> last sequence number applied
}

func parseMeta(fields map[string]string) *Meta {
	m := &Meta{Exists: len(fields) > 0, Fences: map[string]string{}}
	for f, v := range fields {
		switch {
		case strings.HasPrefix(f, fencePrefix):
			m.Fences[strings.TrimPrefix(f, fencePrefix)] = v
		case f == lostField:
			m.Lost = v
		case f == holdField:
			m.Hold = v
		}
	}
	return m
}

// Meta reads a view's meta hash.
func (r *Redis) Meta(ctx context.Context, view string) (*Meta, error) {
	fields, err := r.client.HGetAll(ctx, KeysFor(r.prefix, view).Meta()).Result()
	if err != nil {
		return nil, fmt.Errorf("read meta of view %s: %w", view, err)
	}
	return parseMeta(fields), nil
}

// nextPairs lists the live hashes of a view with their fresh counterparts:
// the item counts first, then the measures.
func nextPairs(k Keys, view *aggregate.View) [][2]string {
	pairs := [][2]string{{k.Items(), k.Next(itemsSuffix)}}
	for _, m := range view.Measures {
		pairs = append(pairs, [2]string{k.Measure(m.Name), k.Next(m.Name)})
	}
	return pairs
}

// bucketPairs is nextPairs for one bucket of a bucketed view.
func bucketPairs(k Keys, view *aggregate.View, bucket string) [][2]string {
	pairs := [][2]string{{k.BucketItems(bucket), k.NextBucketMeasure(bucket, itemsSuffix)}}
	for _, m := range view.Measures {
		pairs = append(pairs, [2]string{k.BucketMeasure(bucket, m.Name), k.NextBucketMeasure(bucket, m.Name)})
	}
	return pairs
}

// ClearNext deletes a view's fresh keys, left behind by a rebuild that
// stopped before its swap.
func (r *Redis) ClearNext(ctx context.Context, view *aggregate.View) error {
	var keys []string
	k := KeysFor(r.prefix, view.Name)
	if view.Bucketed() {
		names, err := r.client.ZRangeByScore(ctx, k.NextBuckets(), everyBucket).Result()
		if err != nil {
			return fmt.Errorf("list fresh buckets of view %s: %w", view.Name, err)
		}
		for _, b := range names {
			for _, p := range bucketPairs(k, view, b) {
				keys = append(keys, p[1])
			}
		}
		keys = append(keys, k.NextBuckets())
	} else {
		for _, p := range nextPairs(k, view) {
			keys = append(keys, p[1])
		}
	}
	// One DEL per key: on a cluster a multi-key DEL must stay in one slot,
	// which these do, but the client would still split it by node.
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, k := range keys {
			p.Del(ctx, k)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete fresh keys of view %s: %w", view.Name, err)
	}
	return nil
}

// WriteNext writes groups, as whole values, into a view's fresh keys, in
// chunks. A group with no items is deleted from them, as the apply script
// does with the live keys.
func (r *Redis) WriteNext(ctx context.Context, view *aggregate.View, groups map[string]*aggregate.GroupDelta) error {
	if view.Bucketed() {
		return fmt.Errorf("write fresh keys of view %s: the view has buckets", view.Name)
	}
	w := &nextWriter{r: r, view: view, p: r.client.Pipeline()}
	w.write(ctx, nextPairs(KeysFor(r.prefix, view.Name), view), groups, nil)
	return w.flush(ctx)
}

// WriteNextBuckets is WriteNext for a bucketed view: groups per bucket
// start. Each bucket's fresh hashes expire with the bucket, and the swap
// keeps that expiry; the buckets are listed among the fresh ones before
// anything is written into them.
func (r *Redis) WriteNextBuckets(ctx context.Context, view *aggregate.View, buckets map[int64]map[string]*aggregate.GroupDelta) error {
	k := KeysFor(r.prefix, view.Name)
	starts := slices.Sorted(maps.Keys(buckets))
	for i := 0; i < len(starts); i += nextChunk {
		var zs []redis.Z
		for _, start := range starts[i:min(i+nextChunk, len(starts))] {
			zs = append(zs, redis.Z{Score: float64(start), Member: aggregate.BucketName(start)})
		}
		if err := r.client.ZAdd(ctx, k.NextBuckets(), zs...).Err(); err != nil {
			return fmt.Errorf("write fresh keys of view %s: %w", view.Name, err)
		}
	}
	w := &nextWriter{r: r, view: view, p: r.client.Pipeline()}
	for _, start := range starts {
		expire := view.BucketExpiry(start)
		w.write(ctx, bucketPairs(k, view, aggregate.BucketName(start)), buckets[start], &expire)
		if w.err != nil {
			break
		}
	}
	return w.flush(ctx)
}

// nextWriter writes fresh hashes in pipelines of about nextChunk groups,
// across buckets: many small buckets do not cost a round trip each.
type nextWriter struct {
	r      *Redis
	view   *aggregate.View
	p      redis.Pipeliner
	queued int
	err    error
}

func (w *nextWriter) flush(ctx context.Context) error {
	if w.err == nil && w.queued > 0 {
		if _, err := w.p.Exec(ctx); err != nil {
			w.err = fmt.Errorf("write fresh keys of view %s: %w", w.view.Name, err)
		}
		w.queued = 0
	}
	return w.err
}

// write queues groups, as whole values, into the fresh hashes of pairs,
// each with expire if set.
func (w *nextWriter) write(ctx context.Context, pairs [][2]string, groups map[string]*aggregate.GroupDelta, expire *time.Time) {
	view := w.view
	names := make([]string, 0, len(groups))
	for g := range groups {
		names = append(names, g)
	}
	sort.Strings(names)
	for start := 0; start < len(names) && w.err == nil; start += nextChunk {
		chunk := names[start:min(start+nextChunk, len(names))]
		sets := make([][]any, len(pairs))
		var dels []string
		for _, g := range chunk {
			gd := groups[g]
			if gd.Count == 0 {
				dels = append(dels, g)
				continue
			}
			sets[0] = append(sets[0], g, gd.Count)
			for i := range view.Measures {
				if si := view.SumIndex(i); si >= 0 {
					sets[i+1] = append(sets[i+1], g, gd.Sums[si].String())
				} else {
					sets[i+1] = append(sets[i+1], g, gd.Count)
				}
			}
		}
		for i, pr := range pairs {
			if len(sets[i]) > 0 {
				w.p.HSet(ctx, pr[1], sets[i]...)
			}
			if len(dels) > 0 {
				w.p.HDel(ctx, pr[1], dels...)
			}
			if expire != nil {
				w.p.PExpireAt(ctx, pr[1], *expire)
			}
		}
		if w.queued += len(chunk); w.queued >= nextChunk {
			w.flush(ctx)
		}
	}
}

// Hold stops the daemons from applying deltas to view for ttl (they retry
// the batch), and returns the meta hash as of the hold: its fences stay
// put until the hold is released, swapped or past its deadline.
func (r *Redis) Hold(ctx context.Context, view, token string, ttl time.Duration) (*Meta, error) {
	res, err := holdScript.Run(ctx, r.client, []string{KeysFor(r.prefix, view).Meta()}, token, ttl.Milliseconds()).StringSlice()
	if err != nil {
		return nil, fmt.Errorf("hold view %s: %w", view, err)
	}
	fields := make(map[string]string, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		fields[res[i]] = res[i+1]
	}
	return parseMeta(fields), nil
}

// Release drops the hold token set on view, if it is still there.
func (r *Redis) Release(ctx context.Context, view, token string) error {
	return releaseScript.Run(ctx, r.client, []string{KeysFor(r.prefix, view).Meta()}, token).Err()
}

// FenceMove is one shard's fence as a swap finds it and leaves it.
type FenceMove struct {
	Shard, Expect, New string
}

// SwapRefusedError means the swap changed nothing: the hold expired and
// was replaced, or a daemon moved a fence after the hold expired.
type SwapRefusedError struct{ View, Why string }

func (e *SwapRefusedError) Error() string {
	return fmt.Sprintf("swap of view %s refused: %s", e.View, e.Why)
}

// Swap replaces the live keys of view with its fresh keys, provided token
// still holds the view and every fence is still Expect; it moves the
// fences to New, clears the lost mark and the hold, bumps the version and
// publishes a reset message. It returns the new version.
//
// For a bucketed view every bucket listed in the index or among the fresh
// ones is swapped: a fresh bucket replaces the live one, a live bucket
// without a fresh one is deleted, and the index then lists the buckets
// that hold items. A bucket that entered the index since Swap read it
// (only possible once the hold has run out) refuses the swap.
func (r *Redis) Swap(ctx context.Context, view *aggregate.View, token string, fences []FenceMove) (int64, error) {
	var starts map[string]int64
	if view.Bucketed() {
		k := KeysFor(r.prefix, view.Name)
		live, err := r.client.ZRangeByScoreWithScores(ctx, k.Buckets(), everyBucket).Result()
		var fresh []redis.Z
		if err == nil {
			fresh, err = r.client.ZRangeByScoreWithScores(ctx, k.NextBuckets(), everyBucket).Result()
		}
		if err != nil {
			return 0, fmt.Errorf("swap view %s: list buckets: %w", view.Name, err)
		}
		starts = map[string]int64{}
		for _, z := range append(live, fresh...) {
			name, _ := z.Member.(string)
			starts[name] = int64(z.Score)
		}
	}
	return r.swap(ctx, view, token, fences, starts)
}

// swap runs the swap script; starts names the buckets to swap, by name
// with their start, for a bucketed view.
func (r *Redis) swap(ctx context.Context, view *aggregate.View, token string, fences []FenceMove, starts map[string]int64) (int64, error) {
	k := KeysFor(r.prefix, view.Name)
	keys := []string{k.Meta()}
	script := swapScript
	var buckets []any
	if view.Bucketed() {
		script = swapBucketsScript
		keys = append(keys, k.Buckets(), k.NextBuckets())
		names := slices.Sorted(maps.Keys(starts))
		buckets = append(buckets, len(names))
		for _, b := range names {
			buckets = append(buckets, b, starts[b])
			for _, p := range bucketPairs(k, view, b) {
				keys = append(keys, p[0], p[1])
			}
		}
	} else {
		for _, p := range nextPairs(k, view) {
			keys = append(keys, p[0], p[1])
		}
	}
	ts := r.now().UnixMilli()
	var head strings.Builder
	head.WriteString(`{"view":`)
	writeJSONString(&head, view.Name)
	head.WriteString(`,"version":`)
	tail := `,"reset":true,"ts_ms":` + strconv.FormatInt(ts, 10) + `}`
	args := []any{token, ts, k.Channel(), head.String(), tail, r.publish}
	args = append(args, buckets...)
	for _, f := range fences {
		args = append(args, fencePrefix+f.Shard, f.Expect, f.New)
	}
	res, err := script.Run(ctx, r.client, keys, args...).Slice()
	if err != nil {
		return 0, fmt.Errorf("swap view %s: %w", view.Name, err)
	}
	if len(res) != 2 {
		return 0, fmt.Errorf("swap script returned %v", res)
	}
	if status, _ := res[0].(int64); status != 1 {
		why, _ := res[1].(string)
		return 0, &SwapRefusedError{View: view.Name, Why: why}
	}
	v, _ := res[1].(int64)
	return v, nil
}

// SnapshotWithFences is Snapshot with the fences that the numbers belong
// to, read in the same MULTI/EXEC.
func (r *Redis) SnapshotWithFences(ctx context.Context, view *aggregate.View) (*Snapshot, *Meta, error) {
	k := KeysFor(r.prefix, view.Name)
	hashes := make([]*redis.MapStringStringCmd, len(view.Measures))
	var meta *redis.MapStringStringCmd
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		meta = p.HGetAll(ctx, k.Meta())
		for i, m := range view.Measures {
			hashes[i] = p.HGetAll(ctx, k.Measure(m.Name))
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("snapshot of view %s: %w", view.Name, err)
	}
	fields := meta.Val()
	s := &Snapshot{View: view.Name, Measures: make(map[string]map[string]string, len(view.Measures))}
	s.Version = atoi(fields["version"])
	s.UpdatedMS = atoi(fields["updated_ms"])
	s.Lost = fields[lostField]
	for i, m := range view.Measures {
		s.Measures[m.Name] = hashes[i].Val()
	}
	return s, parseMeta(fields), nil
}
