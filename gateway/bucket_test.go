package gateway_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/internal/testenv"
	"github.com/streamtally/streamtally/publish"
)

// bucketViews adds to the totals view a an hourly view h: a count per
// group and hour of the item's attribute t.
var bucketViews = []config.View{
	testViews[0],
	{
		Name: "h", GroupBy: []string{"g"}, Measures: map[string]string{"n": "count"},
		Bucket: &config.Bucket{Size: "1h", Time: "t", Retention: "720h"},
		Spec: aggregate.Spec{Name: "h", GroupBy: []string{"g"}, Measures: []aggregate.MeasureSpec{{Name: "n", Func: "count"}},
			Bucket: &aggregate.BucketSpec{Size: time.Hour, Retention: 720 * time.Hour, Time: "t"}},
	},
}

func startBucketGateway(t *testing.T) *gw {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	return startGatewayFull(t, defaultServe(), 0, rdb, newPrefix(), bucketViews)
}

// applyBucketScript does what the daemon's apply script does for one count
// delta in one bucket: the version, the bucket's hash and index, and a
// message with "buckets" instead of "deltas".
var applyBucketScript = redis.NewScript(`
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[9]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'updated_ms', ARGV[3])
local n = redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[2])
if n == 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
if redis.call('EXISTS', KEYS[2]) == 1 then
  redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
else
  redis.call('ZREM', KEYS[3], ARGV[5])
end
if ARGV[7] == '1' then
  redis.call(ARGV[8], KEYS[4], cjson.encode({view = ARGV[4], epoch = epoch, version = v, buckets = {[ARGV[5]] = {n = {[ARGV[1]] = ARGV[2]}}}, ts_ms = tonumber(ARGV[3])}))
end
return v
`)

// applyAt changes group's count in view h's bucket of at by delta.
func (g *gw) applyAt(at time.Time, group string, delta int, publishIt bool) int64 {
	g.t.Helper()
	start := at.Truncate(time.Hour).UTC()
	name := start.Format(time.RFC3339)
	k := publish.KeysFor(g.prefix, "h")
	pub := "0"
	if publishIt {
		pub = "1"
	}
	v, err := applyBucketScript.Run(context.Background(), g.rdb,
		[]string{k.Meta(), k.BucketMeasure(name, "n"), k.Buckets(), k.Channel()},
		group, delta, time.Now().UnixMilli(), "h", name, start.Unix(), pub, publishCommand(g.rdb), testEpoch).Int64()
	if err != nil {
		g.t.Fatal(err)
	}
	return v
}

func (g *gw) get(path string) (int, []byte) {
	g.t.Helper()
	resp, err := http.Get(g.url + path)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		g.t.Fatal(err)
	}
	return resp.StatusCode, b
}

func (g *gw) series(query string) *publish.Series {
	g.t.Helper()
	code, b := g.get("/v1/views/h" + query)
	if code != 200 {
		g.t.Fatalf("GET /v1/views/h%s: %d %s", query, code, b)
	}
	var s publish.Series
	if err := json.Unmarshal(b, &s); err != nil {
		g.t.Fatal(err)
	}
	return &s
}

func seriesOf(t *testing.T, e sseEvent) *publish.Series {
	t.Helper()
	if e.Event != "snapshot" {
		t.Fatalf("got %s %s, want a snapshot", e.Event, e.ID)
	}
	var s publish.Series
	if err := json.Unmarshal([]byte(e.Data), &s); err != nil {
		t.Fatal(err)
	}
	if s.Version != e.version(t) {
		t.Fatalf("snapshot event id %s, version %d", e.ID, s.Version)
	}
	return &s
}

// counts flattens a series' measure n to "bucket/group=value".
func counts(s *publish.Series) string {
	var out []string
	for b, ms := range s.Buckets {
		for g, v := range ms["n"] {
			out = append(out, b+"/"+g+"="+v)
		}
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func hourName(t time.Time) string { return t.Truncate(time.Hour).UTC().Format(time.RFC3339) }

func TestViewListSaysWhichViewsAreBucketed(t *testing.T) {
	g := startBucketGateway(t)
	code, b := g.get("/v1/views")
	if code != 200 {
		t.Fatalf("%d %s", code, b)
	}
	var got struct {
		Views []struct {
			Name   string
			Bucket *struct {
				Size      string `json:"size"`
				SizeS     int64  `json:"size_s"`
				Time      string `json:"time"`
				Retention string `json:"retention"`
			}
		}
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Views) != 2 || got.Views[0].Bucket != nil {
		t.Fatalf("views %s: want a without bucket, then h", b)
	}
	if bk := got.Views[1].Bucket; bk == nil || bk.Size != "1h" || bk.SizeS != 3600 || bk.Time != "t" || bk.Retention != "720h" {
		t.Fatalf("view h: %s", b)
	}
}

func TestBucketedViewAnswersItsSeries(t *testing.T) {
	g := startBucketGateway(t)
	now := time.Now()
	g.applyAt(now, "x", 1, true)
	g.applyAt(now, "x", 1, true)
	g.applyAt(now.Add(-3*time.Hour), "y", 1, true)
	g.applyAt(now.Add(-30*time.Hour), "z", 1, true) // before the default range

	s := g.series("")
	if want := "" + hourName(now.Add(-3*time.Hour)) + "/y=1 " + hourName(now) + "/x=2"; counts(s) != want {
		t.Fatalf("default range: %q, want %q", counts(s), want)
	}
	if s.Version != 4 || s.From != hourName(now.Add(-23*time.Hour)) || s.To != hourName(now.Add(time.Hour)) {
		t.Fatalf("default range: version %d, from %s to %s", s.Version, s.From, s.To)
	}
	q := "?from=" + url.QueryEscape(hourName(now.Add(-31*time.Hour))) + "&to=" + url.QueryEscape(hourName(now.Add(-2*time.Hour)))
	if want := hourName(now.Add(-30*time.Hour)) + "/z=1 " + hourName(now.Add(-3*time.Hour)) + "/y=1"; counts(g.series(q)) != want {
		t.Fatalf("range %s: %q, want %q", q, counts(g.series(q)), want)
	}

	for _, bad := range []string{"?from=yesterday", "?to=2026-13-01T00:00:00Z", "?from=2026-11-29T10:00:00Z&to=2026-11-29T09:00:00Z"} {
		code, b := g.get("/v1/views/h" + bad)
		var e map[string]string
		if code != 400 || json.Unmarshal(b, &e) != nil || e["error"] == "" || strings.Count(string(b), "\n") != 1 {
			t.Errorf("GET /v1/views/h%s: %d %q, want 400 with a one-line JSON error", bad, code, b)
		}
	}
	if code, b := g.get("/v1/views/a?from=2026-11-29T10:00:00Z"); code != 400 {
		t.Errorf("a range on a view without buckets: %d %s, want 400", code, b)
	}
}

// bucketState is what a dashboard of a bucketed view holds: a series with
// the deltas of its buckets applied.
type bucketState struct {
	version  int64
	from, to string           // to is "" for an open range
	n        map[string]int64 // "bucket/group" -> count
}

func (st *bucketState) apply(t *testing.T, e sseEvent) {
	t.Helper()
	switch e.Event {
	case "snapshot":
		s := seriesOf(t, e)
		st.version, st.from, st.to, st.n = s.Version, s.From, s.To, map[string]int64{}
		for b, ms := range s.Buckets {
			for g, v := range ms["n"] {
				st.n[b+"/"+g], _ = strconv.ParseInt(v, 10, 64)
			}
		}
	case "delta":
		var d struct {
			Version int64                                   `json:"version"`
			Buckets map[string]map[string]map[string]string `json:"buckets"`
			Deltas  any                                     `json:"deltas"`
		}
		if err := json.Unmarshal([]byte(e.Data), &d); err != nil {
			t.Fatal(err)
		}
		if d.Version != e.version(t) || d.Version != st.version+1 || d.Deltas != nil || len(d.Buckets) == 0 {
			t.Fatalf("delta %s after version %d: %s", e.ID, st.version, e.Data)
		}
		st.version = d.Version
		for b, ms := range d.Buckets {
			if b < st.from || (st.to != "" && b >= st.to) {
				continue // the state does not hold this bucket
			}
			for g, v := range ms["n"] {
				n, _ := strconv.ParseInt(v, 10, 64)
				st.n[b+"/"+g] += n
				if st.n[b+"/"+g] == 0 {
					delete(st.n, b+"/"+g)
				}
			}
		}
	default:
		t.Fatalf("unexpected event %q", e.Event)
	}
}

// catchUp applies a new stream's first events, a snapshot and the deltas
// after it, until the state is at version v.
func (st *bucketState) catchUp(t *testing.T, next func() sseEvent, v int64) {
	t.Helper()
	e := next()
	if e.Event != "snapshot" {
		t.Fatalf("first event %s %s, want a snapshot", e.Event, e.ID)
	}
	st.apply(t, e)
	for st.version < v {
		st.apply(t, next())
	}
	if st.version != v {
		t.Fatalf("caught up to version %d, want %d", st.version, v)
	}
}

// viewEvent reads a multiplexed stream's next event of view, with its id
// cut down to that view's version.
func viewEvent(t *testing.T, s *stream, view string) sseEvent {
	t.Helper()
	for {
		e := s.next()
		if !strings.Contains(e.Data, `"view":"`+view+`"`) {
			continue
		}
		for _, part := range strings.Split(e.ID, ",") {
			if name, ver, _ := strings.Cut(part, ":"); name == view {
				e.ID = ver
			}
		}
		return e
	}
}

func (st *bucketState) String() string {
	var out []string
	for k, v := range st.n {
		out = append(out, k+"="+strconv.FormatInt(v, 10))
	}
	sort.Strings(out)
	return strings.Join(out, " ")
}

func TestBucketedStreamSendsSeriesThenBucketDeltas(t *testing.T) {
	g := startBucketGateway(t)
	now := time.Now()
	g.applyAt(now, "x", 1, true)
	g.applyAt(now.Add(-30*time.Hour), "z", 1, true)

	live := g.open("h", nil)
	q := "?from=" + url.QueryEscape(hourName(now.Add(-31*time.Hour))) + "&to=" + url.QueryEscape(hourName(now.Add(-29*time.Hour)))
	fixed := g.openPath("/v1/views/h/events"+q, nil)
	mux := g.openPath("/v1/events?view=a&view=h", nil)
	var st, stFixed, stMux bucketState
	st.catchUp(t, live.next, 2)
	if st.String() != hourName(now)+"/x=1" {
		t.Fatalf("live state %s", &st)
	}
	stFixed.catchUp(t, fixed.next, 2)
	if stFixed.String() != hourName(now.Add(-30*time.Hour))+"/z=1" {
		t.Fatalf("state of %s: %s", q, &stFixed)
	}
	muxNext := func() sseEvent { return viewEvent(t, mux, "h") }
	stMux.catchUp(t, muxNext, 2)

	g.applyAt(now, "x", 1, true)                    // 3
	g.applyAt(now.Add(time.Hour), "x", 1, true)     // 4: a bucket after the snapshot's
	g.applyAt(now.Add(-30*time.Hour), "z", 1, true) // 5
	g.applyAt(now.Add(-30*time.Hour), "w", 1, true) // 6
	for v := int64(3); v <= 6; v++ {
		st.apply(t, live.expect("delta", v))
		stFixed.apply(t, fixed.expect("delta", v))
		stMux.apply(t, muxNext())
	}
	if want := hourName(now.Add(-30*time.Hour)) + "/w=1 " + hourName(now.Add(-30*time.Hour)) + "/z=2"; stFixed.String() != want {
		t.Fatalf("state of %s: %s, want %s", q, &stFixed, want)
	}
	want := hourName(now.Add(-30*time.Hour)) + "/w=1 " + hourName(now.Add(-30*time.Hour)) + "/z=2 " + hourName(now) + "/x=2 " + hourName(now.Add(time.Hour)) + "/x=1"
	open := &bucketState{}
	open.catchUp(t, g.openPath("/v1/views/h/events?from="+url.QueryEscape(hourName(now.Add(-31*time.Hour))), nil).next, 6)
	if open.String() != want {
		t.Fatalf("an open range from 31 h ago: %s, want %s", open, want)
	}
	if want := hourName(now) + "/x=2 " + hourName(now.Add(time.Hour)) + "/x=1"; st.String() != want || stMux.String() != want {
		t.Fatalf("live state %s, multiplexed %s, want %s", &st, &stMux, want)
	}

	// A gap heals every client with a series of its own range.
	g.applyAt(now, "y", 1, false)                   // 7: lost
	g.applyAt(now.Add(-30*time.Hour), "z", 1, true) // 8 shows the gap
	st.apply(t, live.expect("snapshot", 8))
	stFixed.apply(t, fixed.expect("snapshot", 8))
	if want := hourName(now) + "/x=2 " + hourName(now) + "/y=1 " + hourName(now.Add(time.Hour)) + "/x=1"; st.String() != want {
		t.Fatalf("live state after the gap %s, want %s", &st, want)
	}
	if want := hourName(now.Add(-30*time.Hour)) + "/w=1 " + hourName(now.Add(-30*time.Hour)) + "/z=3"; stFixed.String() != want {
		t.Fatalf("state of %s after the gap %s, want %s", q, &stFixed, want)
	}

	// Resuming from a version the ring holds gets the deltas; from before
	// the gap's snapshot, a fresh series.
	g.applyAt(now, "x", 1, true) // 9
	st.apply(t, live.expect("delta", 9))
	r := g.open("h", http.Header{"Last-Event-ID": {id(8)}})
	r.expect("delta", 9)
	r = g.open("h", http.Header{"Last-Event-ID": {id(6)}})
	var rs bucketState
	rs.catchUp(t, r.next, 9)
	if rs.String() != st.String() {
		t.Fatalf("resumed from before the gap: %s, want %s", &rs, &st)
	}
}
