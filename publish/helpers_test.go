package publish

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/big"
	"os"
	"regexp"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var prefixSeq atomic.Int64

// testPrefix returns a key prefix no other test, and no earlier run against
// the same server, uses.
func testPrefix(t *testing.T) string {
	name := strings.NewReplacer("/", ".", " ", "_", "{", "", "}", "").Replace(t.Name())
	return fmt.Sprintf("pt.%s.%d.%d", name, time.Now().UnixNano(), prefixSeq.Add(1))
}

func newClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr})
	t.Cleanup(func() { c.Close() })
	return c
}

// fixture is a store on the shared redis-server under a prefix of its own.
type fixture struct {
	t      *testing.T
	c      *redis.Client
	prefix string
	store  *Redis
}

func newFixture(t *testing.T, views ...*aggregate.View) *fixture {
	t.Helper()
	c := newClient(t, testenv.Redis(t))
	p := testPrefix(t)
	return &fixture{t: t, c: c, prefix: p, store: NewRedis(c, p, views)}
}

func (f *fixture) keys(view string) Keys { return KeysFor(f.prefix, view) }

func (f *fixture) hash(key string) map[string]string {
	f.t.Helper()
	m, err := f.c.HGetAll(context.Background(), key).Result()
	if err != nil {
		f.t.Fatalf("HGETALL %s: %v", key, err)
	}
	return m
}

func (f *fixture) measure(view, measure string) map[string]string {
	f.t.Helper()
	return f.hash(f.keys(view).Measure(measure))
}

func (f *fixture) meta(view string) map[string]string {
	f.t.Helper()
	return f.hash(f.keys(view).Meta())
}

func (f *fixture) version(view string) string {
	f.t.Helper()
	return f.meta(view)["version"]
}

// state is every measure hash of a view plus its item counts.
func (f *fixture) state(v *aggregate.View) map[string]map[string]string {
	f.t.Helper()
	out := map[string]map[string]string{"_items": f.hash(f.keys(v.Name).Items())}
	for _, m := range v.Measures {
		out[m.Name] = f.measure(v.Name, m.Name)
	}
	return out
}

func (f *fixture) apply(d *aggregate.Delta) {
	f.t.Helper()
	if err := f.store.Apply(context.Background(), d); err != nil {
		f.t.Fatalf("Apply(view %s, after %q, through %q): %v", d.View.Name, d.After, d.Through, err)
	}
}

// platformView is the fundraiser view: sum(amount) and count by platform.
func platformView(name string) *aggregate.View {
	return aggregate.NewView(aggregate.Spec{
		Name:    name,
		GroupBy: []string{"platform"},
		Measures: []aggregate.MeasureSpec{
			{Name: "amount", Func: "sum", Attr: "amount"},
			{Name: "donations", Func: "count"},
		},
	})
}

// sumOnlyView has no count measure: group removal must rely on _items.
func sumOnlyView(name, groupBy string) *aggregate.View {
	return aggregate.NewView(aggregate.Spec{
		Name:     name,
		GroupBy:  []string{groupBy},
		Measures: []aggregate.MeasureSpec{{Name: "amount", Func: "sum", Attr: "amount"}},
	})
}

// gd is a group delta written as text: a count and one decimal per sum
// measure.
type gd struct {
	count int64
	sums  []string
}

func mkDelta(v *aggregate.View, shard, after, through string, groups map[string]gd) *aggregate.Delta {
	d := &aggregate.Delta{View: v, Shard: shard, After: streamtally.Seq(after), Through: streamtally.Seq(through), Records: 1, Groups: map[string]*aggregate.Counters{}}
	for g, x := range groups {
		if len(x.sums) != v.SumCount() {
			panic(fmt.Sprintf("group %s: %d sums for a view with %d", g, len(x.sums), v.SumCount()))
		}
		gdl := &aggregate.Counters{Count: x.count}
		for _, s := range x.sums {
			gdl.Sums = append(gdl.Sums, aggregate.MustDecimal(s))
		}
		d.Groups[g] = gdl
	}
	return d
}

// subscription receives a channel's messages.
type subscription struct {
	t       *testing.T
	c       *redis.Client
	channel string
	ch      <-chan *redis.Message
}

func subscribe(t *testing.T, c *redis.Client, channel string) *subscription {
	t.Helper()
	ps := c.Subscribe(context.Background(), channel)
	t.Cleanup(func() { ps.Close() })
	// Wait for the confirmation, so that nothing published from now on is
	// missed.
	if _, err := ps.ReceiveTimeout(context.Background(), 5*time.Second); err != nil {
		t.Fatalf("subscribe %s: %v", channel, err)
	}
	return &subscription{t: t, c: c, channel: channel, ch: ps.Channel(redis.WithChannelSize(100_000))}
}

func (s *subscription) next() string {
	s.t.Helper()
	select {
	case m := <-s.ch:
		return m.Payload
	case <-time.After(5 * time.Second):
		s.t.Fatalf("no message on %s within 5s", s.channel)
	}
	return ""
}

// expectNone proves that nothing was published before this call: it
// publishes a marker, which must be the next message, and then waits for
// stragglers.
func (s *subscription) expectNone() {
	s.t.Helper()
	marker := fmt.Sprintf("marker-%d", time.Now().UnixNano())
	if err := s.c.Publish(context.Background(), s.channel, marker).Err(); err != nil {
		s.t.Fatalf("publish marker: %v", err)
	}
	if got := s.next(); got != marker {
		s.t.Fatalf("unexpected message on %s: %s", s.channel, got)
	}
	select {
	case m := <-s.ch:
		s.t.Fatalf("unexpected message on %s after the marker: %s", s.channel, m.Payload)
	case <-time.After(300 * time.Millisecond):
	}
}

// pubMessage is the pub/sub contract.
type pubMessage struct {
	View    string                       `json:"view"`
	Epoch   string                       `json:"epoch"`
	Version int64                        `json:"version"`
	Deltas  map[string]map[string]string `json:"deltas"`
	TSMS    *int64                       `json:"ts_ms"`
}

// parseMessage decodes a message strictly: unknown fields, missing fields
// and trailing data are errors.
func parseMessage(t *testing.T, payload string) pubMessage {
	t.Helper()
	var raw map[string]json.RawMessage
	if err := json.Unmarshal([]byte(payload), &raw); err != nil {
		t.Fatalf("message is not a JSON object: %v\n%s", err, payload)
	}
	var names []string
	for k := range raw {
		names = append(names, k)
	}
	sort.Strings(names)
	if got := strings.Join(names, ","); got != "deltas,epoch,ts_ms,version,view" {
		t.Fatalf("message fields = %s, want deltas,epoch,ts_ms,version,view\n%s", got, payload)
	}
	dec := json.NewDecoder(bytes.NewReader([]byte(payload)))
	dec.DisallowUnknownFields()
	var m pubMessage
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decode message: %v\n%s", err, payload)
	}
	if dec.More() {
		t.Fatalf("trailing data after message: %s", payload)
	}
	if len(m.Epoch) != 16 {
		t.Fatalf("message without an epoch of 16 hex digits: %s", payload)
	}
	if m.TSMS == nil || *m.TSMS <= 0 {
		t.Fatalf("message without a positive ts_ms: %s", payload)
	}
	for name, groups := range m.Deltas {
		if len(groups) == 0 {
			t.Fatalf("measure %s has no changed groups but is in the message: %s", name, payload)
		}
		for g, v := range groups {
			checkCanonical(t, "message "+name+"["+g+"]", v)
		}
	}
	return m
}

var canonicalRE = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]*[1-9])?$`)

// checkCanonical fails unless s is a canonical exact decimal: plain digits,
// no exponent, no leading zeros, no trailing fractional zeros, no "-0".
func checkCanonical(t *testing.T, what, s string) {
	t.Helper()
	if !canonicalRE.MatchString(s) || s == "-0" {
		t.Errorf("%s = %q is not a canonical decimal", what, s)
	}
}

// ratString renders an exact decimal Rat canonically, independently of the
// aggregate package.
func ratString(r *big.Rat) string {
	if r.Sign() == 0 {
		return "0"
	}
	s := r.FloatString(200)
	s = strings.TrimRight(s, "0")
	s = strings.TrimSuffix(s, ".")
	// FloatString rounds; make sure nothing was lost.
	back, ok := new(big.Rat).SetString(s)
	if !ok || back.Cmp(r) != 0 {
		panic("ratString: " + r.String() + " is not a decimal of at most 200 places")
	}
	return s
}

func mustRat(s string) *big.Rat {
	r, ok := new(big.Rat).SetString(s)
	if !ok {
		panic("bad rat " + s)
	}
	return r
}

func discardLog() *slog.Logger { return slog.New(slog.DiscardHandler) }

// item builds an image with the attributes the test views read.
func item(id, platform, country, amount string) streamtally.Image {
	return streamtally.Image{
		"id":       &streamtally.S{Value: id},
		"platform": &streamtally.S{Value: platform},
		"country":  &streamtally.S{Value: country},
		"amount":   &streamtally.N{Value: amount},
	}
}

type stringAttr = streamtally.S

func keyOf(img streamtally.Image) streamtally.Image {
	return streamtally.Image{"id": img["id"]}
}

// scan computes a view's Redis contents from scratch over a set of items,
// as a full table scan would, independently of the aggregate package: per
// group an item count and the exact sum of every sum measure.
func scan(v *aggregate.View, items map[string]streamtally.Image, groupAttr string) map[string]map[string]string {
	counts := map[string]int64{}
	sums := map[string]map[string]*big.Rat{}
	for _, it := range items {
		g := it[groupAttr].(*streamtally.S).Value
		counts[g]++
		for _, m := range v.Measures {
			if m.Kind != aggregate.Sum {
				continue
			}
			if sums[m.Name] == nil {
				sums[m.Name] = map[string]*big.Rat{}
			}
			if sums[m.Name][g] == nil {
				sums[m.Name][g] = new(big.Rat)
			}
			sums[m.Name][g].Add(sums[m.Name][g], mustRat(it[m.Attr].(*streamtally.N).Value))
		}
	}
	out := map[string]map[string]string{"_items": {}}
	for _, m := range v.Measures {
		out[m.Name] = map[string]string{}
	}
	for g, n := range counts {
		out["_items"][g] = fmt.Sprint(n)
		for _, m := range v.Measures {
			if m.Kind == aggregate.Sum {
				out[m.Name][g] = ratString(sums[m.Name][g])
			} else {
				out[m.Name][g] = fmt.Sprint(n)
			}
		}
	}
	return out
}
