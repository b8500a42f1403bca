// Package publish applies view deltas to Redis and announces them on
// pub/sub. It owns the Redis data contract that dashboards read:
//
//	<prefix>:{<view>}:<measure>  HASH group key -> exact decimal string
//	<prefix>:{<view>}:_meta      HASH version, updated_ms (+ internal fields)
//	<prefix>:{<view>}            channel, one JSON message per version
//
// and for a bucketed view, instead of the measure hashes:
//
//	<prefix>:{<view>}:<bucket>:<measure>  HASH per bucket (RFC 3339 start, UTC), expiring
//	<prefix>:{<view>}:_buckets            ZSET bucket -> start in Unix seconds
//
// The braces are a Redis Cluster hash tag: a view's keys share one slot, so
// one script can update them all atomically.
package publish

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
)

//go:embed apply.lua
var applySource string

var applyScript = redis.NewScript(applySource)

// Internal hashes and fields. Readers may ignore them.
const (
	metaSuffix  = "_meta"
	itemsSuffix = "_items"
	// bucketsSuffix names the index of a bucketed view's buckets.
	bucketsSuffix = "_buckets"
	fencePrefix   = "fence:"
	// lostField in the meta hash says the view's counters are incomplete,
	// and why. Readers must not trust a view that has it.
	lostField = "lost"
	// epochField names the view's current epoch: versions count within
	// an epoch, and a new one begins whenever the view's history is not
	// a continuation of what subscribers saw.
	epochField = "epoch"
)

// Keys names one view's Redis keys.
type Keys struct {
	prefix, view string
}

// KeysFor returns the key names of a view under prefix.
func KeysFor(prefix, view string) Keys { return Keys{prefix, view} }

// Channel is the view's pub/sub channel.
func (k Keys) Channel() string { return k.prefix + ":{" + k.view + "}" }

// Measure is the hash holding one measure.
func (k Keys) Measure(name string) string { return k.Channel() + ":" + name }

// Meta is the view's metadata hash.
func (k Keys) Meta() string { return k.Measure(metaSuffix) }

// Items is the view's internal item-count hash, kept even without a count
// measure so that empty groups can be removed.
func (k Keys) Items() string { return k.Measure(itemsSuffix) }

// Buckets is a bucketed view's index of live buckets: a sorted set of
// bucket names scored by their start in Unix seconds.
func (k Keys) Buckets() string { return k.Measure(bucketsSuffix) }

// BucketMeasure is the hash holding one measure of one bucket; bucket is
// its start as aggregate.BucketName writes it.
func (k Keys) BucketMeasure(bucket, name string) string { return k.Measure(bucket + ":" + name) }

// BucketItems is the item-count hash of one bucket.
func (k Keys) BucketItems(bucket string) string { return k.BucketMeasure(bucket, itemsSuffix) }

// Redis is a Store backed by a Redis server or cluster.
type Redis struct {
	client  redis.UniversalClient
	prefix  string
	views   []*aggregate.View
	now     func() time.Time
	publish string // the command that announces a version
}

// NewRedis returns a store for views on client. On a *redis.ClusterClient
// deltas go out with SPUBLISH: a classic PUBLISH is copied to every node
// of the cluster, a sharded one stays on the shard that owns the view.
func NewRedis(client redis.UniversalClient, prefix string, views []*aggregate.View) *Redis {
	publish := "PUBLISH"
	if _, ok := client.(*redis.ClusterClient); ok {
		publish = "SPUBLISH"
	}
	return &Redis{client: client, prefix: prefix, views: views, now: time.Now, publish: publish}
}

// Fences implements aggregate.Store.
func (r *Redis) Fences(ctx context.Context, shard string) (map[string]aggregate.Fence, error) {
	fields := make([]*redis.SliceCmd, len(r.views))
	exists := make([]*redis.IntCmd, len(r.views))
	_, err := r.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, v := range r.views {
			meta := KeysFor(r.prefix, v.Name).Meta()
			fields[i] = p.HMGet(ctx, meta, fencePrefix+shard, lostField, epochField)
			exists[i] = p.Exists(ctx, meta)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := make(map[string]aggregate.Fence, len(r.views))
	for i, v := range r.views {
		vals := fields[i].Val()
		seq, _ := vals[0].(string)
		lost, _ := vals[1].(string)
		epoch, _ := vals[2].(string)
		out[v.Name] = aggregate.Fence{Seq: streamtally.Seq(seq), Held: exists[i].Val() == 1, Lost: lost, Epoch: epoch}
	}
	return out, nil
}

// markLostScript marks a view lost with its reason and, the first time,
// starts a new epoch: versions counted from here on do not continue the
// history subscribers saw.
var markLostScript = redis.NewScript(`
if redis.call('HEXISTS', KEYS[1], 'lost') == 0 then
  redis.call('HSET', KEYS[1], 'lost', ARGV[1], 'epoch', ARGV[2])
end
return 0
`)

// MarkLost implements aggregate.Store. A view already marked keeps the
// reason it was first marked for: that is the loss, later ones follow
// from it.
func (r *Redis) MarkLost(ctx context.Context, view, reason string) error {
	return markLostScript.Run(ctx, r.client, []string{KeysFor(r.prefix, view).Meta()}, reason, randomID()).Err()
}

// randomID names a new epoch or recount run: random, so that none is
// ever issued twice, even by a Redis that lost the writes that issued it
// and by processes that share no state.
func randomID() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails
	return hex.EncodeToString(b)
}

// Apply implements aggregate.Store: one script call per view delta.
func (r *Redis) Apply(ctx context.Context, d *aggregate.Delta) error {
	k := KeysFor(r.prefix, d.View.Name)
	var kinds strings.Builder
	for i := range d.View.Measures {
		if d.View.SumIndex(i) >= 0 {
			kinds.WriteByte('s')
		} else {
			kinds.WriteByte('c')
		}
	}
	ts := r.now().UnixMilli()
	bump := ""
	if d.NewEpoch {
		bump = "=" + d.EpochSeen
	}
	head, mid := messageHead(d.View.Name)
	var keys []string
	var args []any
	if d.View.Bucketed() {
		keys, args = r.bucketArgs(d, k, ts)
		args = append([]any{fencePrefix + d.Shard, string(d.After), string(d.Through), ts, k.Channel(), head, mid, `,"buckets":{`, kinds.String(), r.publish, randomID(), bump}, args...)
	} else {
		keys = make([]string, 0, 2+len(d.View.Measures))
		keys = append(keys, k.Meta(), k.Items())
		for _, m := range d.View.Measures {
			keys = append(keys, k.Measure(m.Name))
		}
		groups := sortedGroups(d.Groups)
		args = make([]any, 0, 13+len(groups)*(2+d.View.SumCount()))
		args = append(args, fencePrefix+d.Shard, string(d.After), string(d.Through), ts, k.Channel(), head, mid, message(d, groups, ts), kinds.String(), r.publish, randomID(), bump, "")
		args = appendGroups(args, d.Groups, groups)
	}
	res, err := applyScript.Run(ctx, r.client, keys, args...).Slice()
	if err != nil {
		return err
	}
	if len(res) != 2 {
		return fmt.Errorf("apply script returned %v", res)
	}
	status, _ := res[0].(int64)
	text, _ := res[1].(string)
	switch status {
	case 1:
		return nil
	case 2:
		return &aggregate.ViewLostError{View: d.View.Name, Reason: text}
	case 3:
		return &aggregate.ViewHeldError{View: d.View.Name}
	}
	return &aggregate.FenceMovedError{View: d.View.Name, Shard: d.Shard, Current: streamtally.Seq(text)}
}

// bucketArgs lays out a bucketed view's delta for the script, after the
// arguments every delta has: after the meta hash and the bucket index,
// each bucket's item-count hash and measure hashes, so that every key the
// script touches is declared; each bucket's part of the message, so that
// the script can leave out a bucket that expired before it ran.
func (r *Redis) bucketArgs(d *aggregate.Delta, k Keys, ts int64) ([]string, []any) {
	v := d.View
	starts := make([]int64, 0, len(d.Buckets))
	for b := range d.Buckets {
		starts = append(starts, b)
	}
	slices.Sort(starts)
	keys := make([]string, 0, 2+len(starts)*(1+len(v.Measures)))
	keys = append(keys, k.Meta(), k.Buckets())
	layout := "items"
	if v.StreamTimed() {
		layout = "net"
	}
	args := []any{layout, `},"ts_ms":` + strconv.FormatInt(ts, 10) + `}`, (v.BucketSize() + v.Retention()).Milliseconds()}
	for _, b := range starts {
		name := aggregate.BucketName(b)
		keys = append(keys, k.BucketItems(name))
		for _, m := range v.Measures {
			keys = append(keys, k.BucketMeasure(name, m.Name))
		}
		groups := sortedGroups(d.Buckets[b])
		args = append(args, name, b, v.BucketExpiry(b).UnixMilli(), bucketPart(v, name, d.Buckets[b], groups), len(groups))
		args = appendGroups(args, d.Buckets[b], groups)
	}
	return keys, args
}

func appendGroups(args []any, gds map[string]*aggregate.Counters, groups []string) []any {
	for _, g := range groups {
		gd := gds[g]
		args = append(args, g, gd.Count)
		for _, s := range gd.Sums {
			args = append(args, s.String())
		}
	}
	return args
}

func sortedGroups(gds map[string]*aggregate.Counters) []string {
	gs := make([]string, 0, len(gds))
	for g := range gds {
		gs = append(gs, g)
	}
	sort.Strings(gs)
	return gs
}

// message is the part of a view's pub/sub message after the version
// number, which only the script knows.
func message(d *aggregate.Delta, groups []string, ts int64) string {
	var b strings.Builder
	b.WriteString(`,"deltas":{`)
	writeMeasures(&b, d.View, d.Groups, groups)
	b.WriteString(`},"ts_ms":`)
	b.WriteString(strconv.FormatInt(ts, 10))
	b.WriteByte('}')
	return b.String()
}

// bucketPart is one bucket's member of a bucketed view's "buckets"
// object; "" when no value of it visibly changed, and it is left out.
func bucketPart(v *aggregate.View, name string, gds map[string]*aggregate.Counters, groups []string) string {
	var b, inner strings.Builder
	if !writeMeasures(&inner, v, gds, groups) {
		return ""
	}
	writeJSONString(&b, name)
	b.WriteString(":{")
	b.WriteString(inner.String())
	b.WriteByte('}')
	return b.String()
}

// messageHead is the start of every message of view, around its epoch:
// {"view":<view>,"epoch":"<epoch>","version":<version>...
func messageHead(view string) (head, mid string) {
	var b strings.Builder
	b.WriteString(`{"view":`)
	writeJSONString(&b, view)
	b.WriteString(`,"epoch":"`)
	return b.String(), `","version":`
}

// writeMeasures writes, per measure, the groups whose value changed, as
// the members of a JSON object, and reports whether it wrote any.
func writeMeasures(b *strings.Builder, v *aggregate.View, gds map[string]*aggregate.Counters, groups []string) bool {
	first := true
	for i, m := range v.Measures {
		si := v.SumIndex(i)
		n := 0
		for _, g := range groups {
			gd := gds[g]
			var val string
			if si < 0 {
				if gd.Count == 0 {
					continue
				}
				val = strconv.FormatInt(gd.Count, 10)
			} else {
				if gd.Sums[si].IsZero() {
					continue
				}
				val = gd.Sums[si].String()
			}
			if n == 0 {
				if !first {
					b.WriteByte(',')
				}
				first = false
				writeJSONString(b, m.Name)
				b.WriteString(":{")
			} else {
				b.WriteByte(',')
			}
			n++
			writeJSONString(b, g)
			b.WriteByte(':')
			writeJSONString(b, val)
		}
		if n > 0 {
			b.WriteByte('}')
		}
	}
	return !first
}

func writeJSONString(b *strings.Builder, s string) {
	q, _ := json.Marshal(s) // a string always marshals
	b.Write(q)
}
