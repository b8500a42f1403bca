package publish

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
)

// A recount writes a view's recount into fresh keys beside the live ones,
// holds the view while it catches up with the stream, and swaps the fresh
// keys in with one script: readers see the old numbers or the new ones.
//
// A recount owns the view for its whole run through a lease (a key with a
// token and a TTL on Redis's clock, renewed while the run lasts): a second
// run refuses to start, every write of fresh keys and the swap check the
// token inside their scripts, and the fresh keys carry the token in their
// names, so that two runs can neither delete nor overwrite each other's
// keys nor swap in keys they did not write.

//go:embed swap.lua
var swapSource string

var swapScript = redis.NewScript(swapSource)

//go:embed fresh.lua
var freshSource string

var freshScript = redis.NewScript(freshSource)

// claimScript takes a view's recount lease if nobody holds it and records
// the run among those that may leave fresh keys behind; otherwise it
// returns the holder and how long its lease has left.
var claimScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1] .. '|' .. ARGV[2], 'NX', 'PX', ARGV[3]) then
  redis.call('SADD', KEYS[2], ARGV[1])
  return {1}
end
return {0, redis.call('GET', KEYS[1]) or '', redis.call('PTTL', KEYS[1])}
`)

// renewScript extends the lease if it is still the caller's.
var renewScript = redis.NewScript(`
local owner = redis.call('GET', KEYS[1]) or ''
if string.sub(owner, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then
  return 0
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`)

// unclaimScript gives the lease up if it is still the caller's.
var unclaimScript = redis.NewScript(`
local owner = redis.call('GET', KEYS[1]) or ''
if string.sub(owner, 1, #ARGV[1] + 1) == ARGV[1] .. '|' then
  redis.call('DEL', KEYS[1])
end
return 0
`)

// holdScript sets the hold, if the caller holds the recount lease, with a
// deadline on Redis's own clock (the apply script compares with that
// clock), and returns the meta hash as it is then: the fences no daemon
// can move while the hold lasts.
var holdScript = redis.NewScript(`
local owner = redis.call('GET', KEYS[2]) or ''
if string.sub(owner, 1, #ARGV[1] + 1) ~= ARGV[1] .. '|' then
  return false
end
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
	nextInfix = "_next"
	holdField = "hold"
	// freshChunk bounds the groups written per script call, so that no
	// single call blocks Redis for long.
	freshChunk = 1000
)

// Recount is the view's recount lease: a string holding the token of the
// run that owns the view and a description of it, expiring on Redis's
// clock unless the run renews it.
func (k Keys) Recount() string { return k.Measure("_recount") }

// Runs is the set of tokens of the recount runs that may have left fresh
// keys: the next run deletes those of runs other than itself.
func (k Keys) Runs() string { return k.Measure(nextInfix) }

// Fresh is the fresh hash that the recount run token fills for the hash
// named suffix (a measure, or the item counts; for a bucketed view
// "<bucket>:<suffix>"), in the view's hash slot.
func (k Keys) Fresh(token, suffix string) string {
	return k.Measure(nextInfix + ":" + token + ":" + suffix)
}

// FreshList is the set of every fresh key the run token wrote.
func (k Keys) FreshList(token string) string { return k.Fresh(token, "_keys") }

// Meta is what a view's meta hash says about its state.
type Meta struct {
	Exists bool
	Lost   string
	Hold   string
	Epoch  string
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
		case f == epochField:
			m.Epoch = v
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

// RecountBusyError means another recount run owns the view.
type RecountBusyError struct {
	View, Holder string
	Until        time.Time // when its lease ends unless that run renews it
}

func (e *RecountBusyError) Error() string {
	return fmt.Sprintf("view %s is being recounted by %s; its lease ends at %s unless that run renews it",
		e.View, e.Holder, e.Until.UTC().Format(time.RFC3339))
}

// ErrRecountLeaseLost means a recount run no longer owns its view: it
// paused past its lease, or Redis lost the lease. Nothing it writes from
// then on is taken.
var ErrRecountLeaseLost = errors.New("the recount lease was lost")

// Claim is one recount run's ownership of one view: the fresh keys it
// writes, its hold, and its swap.
type Claim struct {
	r     *Redis
	view  *aggregate.View
	keys  Keys
	token string
	ttl   time.Duration
	// groups is what the fresh keys hold, per bucket start (0 for a view
	// without buckets): the swap checks that Redis still holds it all.
	groups map[int64]map[string]bool
}

// ClaimRecount takes view's recount lease for ttl and deletes the fresh
// keys that earlier runs left behind. holder describes the run to anyone
// it refuses. It returns a *RecountBusyError if another run holds the
// lease.
func (r *Redis) ClaimRecount(ctx context.Context, view *aggregate.View, holder string, ttl time.Duration) (*Claim, error) {
	k := KeysFor(r.prefix, view.Name)
	c := &Claim{r: r, view: view, keys: k, token: randomID(), ttl: ttl, groups: map[int64]map[string]bool{}}
	res, err := claimScript.Run(ctx, r.client, []string{k.Recount(), k.Runs()}, c.token, holder, ttl.Milliseconds()).Slice()
	if err != nil {
		return nil, fmt.Errorf("take the recount lease of view %s: %w", view.Name, err)
	}
	if ok, _ := res[0].(int64); ok != 1 {
		owner, _ := res[1].(string)
		pttl, _ := res[2].(int64)
		_, who, _ := strings.Cut(owner, "|")
		return nil, &RecountBusyError{View: view.Name, Holder: who, Until: time.Now().Add(time.Duration(pttl) * time.Millisecond)}
	}
	if err := c.clearOthers(ctx); err != nil {
		c.Release(context.WithoutCancel(ctx))
		return nil, err
	}
	return c, nil
}

// clearOthers deletes the fresh keys of every other run. They are dead:
// this run holds the lease, and the fresh-key script refuses a run
// without it, so nothing adds to them meanwhile.
func (c *Claim) clearOthers(ctx context.Context) error {
	tokens, err := c.r.client.SMembers(ctx, c.keys.Runs()).Result()
	if err != nil {
		return fmt.Errorf("list earlier recounts of view %s: %w", c.view.Name, err)
	}
	for _, t := range tokens {
		if t == c.token {
			continue
		}
		if err := c.r.dropFresh(ctx, c.keys, t); err != nil {
			return fmt.Errorf("delete fresh keys of an earlier recount of view %s: %w", c.view.Name, err)
		}
	}
	return nil
}

// dropFresh deletes every fresh key of run token and forgets the run.
func (r *Redis) dropFresh(ctx context.Context, k Keys, token string) error {
	list := k.FreshList(token)
	keys, err := r.client.SMembers(ctx, list).Result()
	if err != nil {
		return err
	}
	// One DEL per key: on a cluster a multi-key DEL must stay in one slot,
	// which these do, but the client would still split it by node.
	_, err = r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, key := range keys {
			p.Del(ctx, key)
		}
		p.Del(ctx, list)
		p.SRem(ctx, k.Runs(), token)
		return nil
	})
	return err
}

// Token identifies the run, in the hold it sets.
func (c *Claim) Token() string { return c.token }

// Renew extends the lease by its TTL; ErrRecountLeaseLost if it is no
// longer this run's.
func (c *Claim) Renew(ctx context.Context) error {
	ok, err := renewScript.Run(ctx, c.r.client, []string{c.keys.Recount()}, c.token, c.ttl.Milliseconds()).Int()
	if err != nil {
		return fmt.Errorf("renew the recount lease of view %s: %w", c.view.Name, err)
	}
	if ok != 1 {
		return fmt.Errorf("view %s: %w", c.view.Name, ErrRecountLeaseLost)
	}
	return nil
}

// Release deletes what is left of the run's fresh keys and gives up the
// lease and any hold. After a swap nothing of the fresh keys is left.
func (c *Claim) Release(ctx context.Context) error {
	err := c.r.dropFresh(ctx, c.keys, c.token)
	if e := releaseScript.Run(ctx, c.r.client, []string{c.keys.Meta()}, c.token).Err(); err == nil {
		err = e
	}
	if e := unclaimScript.Run(ctx, c.r.client, []string{c.keys.Recount()}, c.token).Err(); err == nil {
		err = e
	}
	if err != nil {
		return fmt.Errorf("release the recount of view %s: %w", c.view.Name, err)
	}
	return nil
}

// WriteNext writes groups, as whole values, into the view's fresh keys,
// in chunks. A group with no items is deleted from them, as the apply
// script does with the live keys.
func (c *Claim) WriteNext(ctx context.Context, groups map[string]*aggregate.Counters) error {
	if c.view.Bucketed() {
		return fmt.Errorf("write fresh keys of view %s: the view has buckets", c.view.Name)
	}
	return c.write(ctx, map[int64]map[string]*aggregate.Counters{0: groups})
}

// WriteNextBuckets is WriteNext for a bucketed view: groups per bucket
// start. Each bucket's fresh hashes expire with the bucket, and the swap
// keeps that expiry.
func (c *Claim) WriteNextBuckets(ctx context.Context, buckets map[int64]map[string]*aggregate.Counters) error {
	if !c.view.Bucketed() {
		return fmt.Errorf("write fresh keys of view %s: the view has no buckets", c.view.Name)
	}
	return c.write(ctx, buckets)
}

// write sends buckets to the fresh-key script in calls of about
// freshChunk groups, across buckets: many small buckets do not cost a
// round trip each.
func (c *Claim) write(ctx context.Context, buckets map[int64]map[string]*aggregate.Counters) error {
	v := c.view
	var kinds strings.Builder
	for i := range v.Measures {
		if v.SumIndex(i) >= 0 {
			kinds.WriteByte('s')
		} else {
			kinds.WriteByte('c')
		}
	}
	keys := []string{c.keys.Recount(), c.keys.FreshList(c.token)}
	args := []any{c.token, kinds.String()}
	queued := 0
	flush := func() error {
		if queued == 0 {
			return nil
		}
		ok, err := freshScript.Run(ctx, c.r.client, keys, args...).Int()
		if err != nil {
			return fmt.Errorf("write fresh keys of view %s: %w", v.Name, err)
		}
		if ok != 1 {
			return fmt.Errorf("write fresh keys of view %s: %w", v.Name, ErrRecountLeaseLost)
		}
		keys, args, queued = keys[:2], args[:2], 0
		return nil
	}
	for _, start := range slices.Sorted(maps.Keys(buckets)) {
		groups := buckets[start]
		names := slices.Sorted(maps.Keys(groups))
		present := c.groups[start]
		if present == nil {
			present = map[string]bool{}
			c.groups[start] = present
		}
		for len(names) > 0 {
			chunk := names[:min(len(names), freshChunk-queued)]
			names = names[len(chunk):]
			expire := ""
			if v.Bucketed() {
				expire = strconv.FormatInt(v.BucketExpiry(start).UnixMilli(), 10)
			}
			for _, p := range c.pairs(start) {
				keys = append(keys, p[1])
			}
			args = append(args, expire, len(chunk))
			for _, g := range chunk {
				gd := groups[g]
				args = append(args, g, gd.Count)
				for _, s := range gd.Sums {
					args = append(args, s.String())
				}
				if gd.Count != 0 {
					present[g] = true
				} else {
					delete(present, g)
				}
			}
			if queued += len(chunk); queued >= freshChunk {
				if err := flush(); err != nil {
					return err
				}
			}
		}
	}
	return flush()
}

// pairs lists the live hashes of one bucket (start 0 for a view without
// buckets) with the run's fresh counterparts: the item counts first, then
// the measures.
func (c *Claim) pairs(start int64) [][2]string {
	k, v := c.keys, c.view
	if !v.Bucketed() {
		pairs := [][2]string{{k.Items(), k.Fresh(c.token, itemsSuffix)}}
		for _, m := range v.Measures {
			pairs = append(pairs, [2]string{k.Measure(m.Name), k.Fresh(c.token, m.Name)})
		}
		return pairs
	}
	b := aggregate.BucketName(start)
	pairs := [][2]string{{k.BucketItems(b), k.Fresh(c.token, b+":"+itemsSuffix)}}
	for _, m := range v.Measures {
		pairs = append(pairs, [2]string{k.BucketMeasure(b, m.Name), k.Fresh(c.token, b+":"+m.Name)})
	}
	return pairs
}

// Hold stops the daemons from applying deltas to the view for ttl (they
// retry the batch), and returns the meta hash as of the hold: its fences
// stay put until the hold is released, swapped or past its deadline.
func (c *Claim) Hold(ctx context.Context, ttl time.Duration) (*Meta, error) {
	res, err := holdScript.Run(ctx, c.r.client, []string{c.keys.Meta(), c.keys.Recount()}, c.token, ttl.Milliseconds()).StringSlice()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("hold view %s: %w", c.view.Name, ErrRecountLeaseLost)
	}
	if err != nil {
		return nil, fmt.Errorf("hold view %s: %w", c.view.Name, err)
	}
	fields := make(map[string]string, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		fields[res[i]] = res[i+1]
	}
	return parseMeta(fields), nil
}

// ReleaseHold drops the run's hold, if it is still there.
func (c *Claim) ReleaseHold(ctx context.Context) error {
	return releaseScript.Run(ctx, c.r.client, []string{c.keys.Meta()}, c.token).Err()
}

// FenceMove is one shard's fence as a swap finds it and leaves it.
type FenceMove struct {
	Shard, Expect, New string
}

// SwapRefusedError means the swap changed nothing: the lease or the hold
// expired and was replaced, a daemon moved a fence after the hold
// expired, or Redis lost fresh keys.
type SwapRefusedError struct{ View, Why string }

func (e *SwapRefusedError) Error() string {
	return fmt.Sprintf("swap of view %s refused: %s", e.View, e.Why)
}

// Swap replaces the live keys of the view with the fresh keys this run
// wrote, provided the run still holds the lease and the hold, every fence
// is still Expect, and every fresh hash still holds the groups the run
// wrote; it moves the fences to New, clears the lost mark and the hold,
// starts a new epoch, bumps the version and publishes a reset message. It
// returns the new version.
//
// For a bucketed view every bucket listed in the index or written by the
// run is swapped: a bucket the run wrote groups into replaces the live
// one, any other live bucket is deleted, and the index then lists the
// buckets that hold items. A bucket that entered the index since Swap read
// it (only possible once the hold has run out) refuses the swap.
func (c *Claim) Swap(ctx context.Context, fences []FenceMove) (int64, error) {
	v, k := c.view, c.keys
	starts := map[int64]string{}
	if v.Bucketed() {
		live, err := c.r.client.ZRangeByScoreWithScores(ctx, k.Buckets(), everyBucket).Result()
		if err != nil {
			return 0, fmt.Errorf("swap view %s: list buckets: %w", v.Name, err)
		}
		for _, z := range live {
			name, _ := z.Member.(string)
			starts[int64(z.Score)] = name
		}
		for s := range c.groups {
			starts[s] = aggregate.BucketName(s)
		}
	} else {
		starts[0] = ""
	}
	keys := []string{k.Meta(), k.Recount(), k.Runs(), k.FreshList(c.token)}
	bucketed := ""
	if v.Bucketed() {
		keys = append(keys, k.Buckets())
		bucketed = "buckets"
	}
	ts := c.r.now().UnixMilli()
	head, mid := messageHead(v.Name)
	args := []any{c.token, ts, k.Channel(), head, mid, `,"reset":true,"ts_ms":` + strconv.FormatInt(ts, 10) + `}`,
		c.r.publish, randomID(), bucketed, len(v.Measures), len(fences)}
	for _, f := range fences {
		args = append(args, fencePrefix+f.Shard, f.Expect, f.New)
	}
	for _, s := range slices.Sorted(maps.Keys(starts)) {
		for _, p := range c.pairs(s) {
			keys = append(keys, p[0], p[1])
		}
		expire := ""
		if v.Bucketed() {
			expire = strconv.FormatInt(v.BucketExpiry(s).UnixMilli(), 10)
		}
		args = append(args, starts[s], s, expire, len(c.groups[s]))
	}
	res, err := swapScript.Run(ctx, c.r.client, keys, args...).Slice()
	if err != nil {
		return 0, fmt.Errorf("swap view %s: %w", v.Name, err)
	}
	if len(res) != 2 {
		return 0, fmt.Errorf("swap script returned %v", res)
	}
	if status, _ := res[0].(int64); status != 1 {
		why, _ := res[1].(string)
		return 0, &SwapRefusedError{View: v.Name, Why: why}
	}
	version, _ := res[1].(int64)
	c.groups = map[int64]map[string]bool{}
	return version, nil
}

// Groups counts the groups the fresh keys hold, summed over buckets.
func (c *Claim) Groups() int {
	n := 0
	for _, gs := range c.groups {
		n += len(gs)
	}
	return n
}

// everyBucket ranges over a whole bucket index, with ZRANGEBYSCORE, which
// readers may send already.
var everyBucket = &redis.ZRangeBy{Min: "-inf", Max: "+inf"}

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
	s.Epoch = fields[epochField]
	s.Lost = fields[lostField]
	for i, m := range view.Measures {
		s.Measures[m.Name] = hashes[i].Val()
	}
	return s, parseMeta(fields), nil
}
