package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/internal/testenv"
	"github.com/streamtally/streamtally/publish"
)

func TestSnapshotThenDeltasInVersionOrder(t *testing.T) {
	g := startGateway(t, defaultServe())
	for i := range 3 {
		g.apply("a", fmt.Sprintf("g%d", i%2), 1, true)
	}
	s := g.open("a", nil)
	var st state
	s.catchUp(&st, 3)
	if st.n["g0"] != 2 || st.n["g1"] != 1 {
		t.Fatalf("snapshot state %v", st.n)
	}
	for i := range 40 {
		d := 1
		if i%5 == 4 {
			d = -1
		}
		g.apply("a", fmt.Sprintf("g%d", i%3), d, true)
		g.apply("b", "other", 1, true) // another view's messages never reach this stream
	}
	for v := int64(4); v <= 43; v++ {
		st.apply(t, s.expect("delta", v))
	}
	if snap := g.snapshot("a"); !st.equals(snap) {
		t.Fatalf("snapshot plus deltas %v at version %d; the view holds %v at %d", st.n, st.version, snap.Measures["n"], snap.Version)
	}
}

func TestGapIsHealedWithSnapshot(t *testing.T) {
	g := startGateway(t, defaultServe())
	g.apply("a", "x", 1, true)
	s := g.open("a", nil)
	var st state
	s.catchUp(&st, 1)
	g.apply("a", "x", 1, true)
	st.apply(t, s.expect("delta", 2))
	g.apply("a", "y", 1, false) // version 3: its message is lost
	g.apply("a", "x", 1, true)  // version 4 shows the gap
	st.apply(t, s.expect("snapshot", 4))
	g.apply("a", "y", -1, true)
	st.apply(t, s.expect("delta", 5))
	if snap := g.snapshot("a"); !st.equals(snap) {
		t.Fatalf("state %v at %d; the view holds %v at %d", st.n, st.version, snap.Measures["n"], snap.Version)
	}
}

// A lost last message leaves no later version to show the gap; the
// gateway's check of the version in Redis finds it.
func TestLostLastMessageIsHealedWithSnapshot(t *testing.T) {
	g := startGateway(t, defaultServe())
	s := g.open("a", nil)
	var st state
	st.apply(t, s.expect("snapshot", 0))
	g.apply("a", "x", 1, true)
	st.apply(t, s.expect("delta", 1))
	g.apply("a", "x", 1, false)
	st.apply(t, s.expect("snapshot", 2))
	if st.n["x"] != 2 {
		t.Fatalf("state %v", st.n)
	}
}

func TestResumeWithLastEventID(t *testing.T) {
	serve := defaultServe()
	serve.History = 8 // the ring keeps 8 to 16 deltas
	g := startGateway(t, serve)
	g.apply("a", "x", 1, true)
	s := g.open("a", nil)
	s.catchUp(&state{}, 1)
	for v := int64(2); v <= 4; v++ {
		g.apply("a", "x", 1, true)
		s.expect("delta", v)
	}
	s.close()
	applyAndWait := func(k int) int64 {
		var v int64
		for range k {
			v = g.apply("a", "y", 1, true)
		}
		// A client that reads up to v shows the gateway has it.
		w := g.open("a", nil)
		for w.next().version(t) < v {
		}
		w.close()
		return v
	}
	first := func(lastID string, k int) []string {
		t.Helper()
		r := g.open("a", http.Header{"Last-Event-ID": {lastID}})
		defer r.close()
		var got []string
		for range k {
			e := r.next()
			got = append(got, e.Event+":"+e.ID)
		}
		return got
	}

	applyAndWait(3) // 5, 6, 7
	if got := first(id(4), 3); strings.Join(got, " ") != "delta:"+id(5)+" delta:"+id(6)+" delta:"+id(7) {
		t.Errorf("resume after 4: got %v, want the deltas 5, 6, 7", got)
	}

	upToDate := g.open("a", http.Header{"Last-Event-ID": {id(7)}})
	g.apply("a", "x", 1, true)
	upToDate.expect("delta", 8)
	upToDate.close()

	v := applyAndWait(20) // 9..28: version 1 has left the ring
	want := "snapshot:" + id(v)
	if got := first(id(1), 1); strings.Join(got, " ") != want {
		t.Errorf("resume after 1, older than the history: got %v, want %s", got, want)
	}
	if got := first(id(99), 1); strings.Join(got, " ") != want {
		t.Errorf("resume after 99, ahead of the view: got %v, want %s", got, want)
	}
	// A version of another epoch, or of none, says nothing of this one.
	for _, other := range []string{"27@e0", "27"} {
		if got := first(other, 1); strings.Join(got, " ") != want {
			t.Errorf("resume after %s: got %v, want %s", other, got, want)
		}
	}
}

// A client that reads nothing fills its queue and is dropped; the others
// get every delta in order, and the dropped one resumes where it stopped.
func TestSlowClientIsDroppedWithoutSlowingOthers(t *testing.T) {
	serve := defaultServe()
	serve.ClientBuffer = 64
	serve.History = 4096
	serve.Heartbeat = time.Hour // no heartbeats between the deltas
	g := startGateway(t, serve)
	fast := g.open("a", nil)
	var st state
	st.apply(t, fast.expect("snapshot", 0))

	// The slow client: a raw connection that sends its request and reads
	// nothing, so the kernel's buffers fill and the gateway's writes block.
	conn, err := net.Dial("tcp", strings.TrimPrefix(g.url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	// A small fixed receive buffer, so that what fills the path does not
	// depend on the machine's TCP autotuning limits.
	if err := conn.(*net.TCPConn).SetReadBuffer(16 << 10); err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "GET /v1/views/a/events HTTP/1.1\r\nHost: x\r\n\r\n")
	testenv.WaitFor(t, 20*time.Second, "the slow client to join", func() bool { return g.srv.Hub().Clients() == 2 })

	// 64 KB group names make each delta large, so that a few hundred of
	// them exceed what the socket buffers and the queue hold. Rounds of 16
	// keep the fast client within its queue of 64 however slowly this
	// machine runs it.
	const n, round = 640, 16
	for v := int64(1); v <= n; {
		for range round {
			g.apply("a", fmt.Sprintf("%05d%s", v, strings.Repeat("x", 64<<10)), 1, true)
			v++
		}
		for w := v - round; w < v; w++ {
			st.apply(t, fast.expect("delta", w))
		}
	}
	if snap := g.snapshot("a"); !st.equals(snap) {
		t.Fatal("the fast client's state differs from the view")
	}
	testenv.WaitFor(t, 20*time.Second, "the slow client to be dropped", func() bool { return g.srv.Hub().Clients() == 1 })

	// What the slow client got is a prefix of the versions, cut off; it
	// resumes from its last complete event.
	raw, err := io.ReadAll(conn)
	if err != nil && !isReset(err) {
		t.Fatal(err)
	}
	last := int64(-1)
	for _, line := range strings.Split(string(raw), "\n") {
		if id, ok := strings.CutPrefix(line, "id: "); ok {
			v := sseEvent{ID: strings.TrimSpace(id)}.version(t)
			if last >= 0 && v != last+1 {
				t.Fatalf("slow client got version %d after %d", v, last)
			}
			last = v
		}
	}
	if last < 0 || last >= n {
		t.Fatalf("slow client's last version %d; want a cut-off before %d", last, n)
	}
	// It gets the deltas it missed, or a snapshot when they are more than
	// its queue holds.
	resumed := g.open("a", http.Header{"Last-Event-ID": {id(last)}})
	if n-last < int64(serve.ClientBuffer) {
		resumed.expect("delta", last+1)
	} else {
		resumed.expect("snapshot", n)
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// A stream idle for longer than the write timeout still delivers the next
// event, even one larger than the response buffer: the timeout bounds each
// write, not the life of the stream.
func TestIdleStreamOutlivesWriteTimeout(t *testing.T) {
	serve := defaultServe()
	serve.Heartbeat = time.Hour
	g := startGatewayWith(t, serve, 100*time.Millisecond)
	s := g.open("a", nil)
	var st state
	s.catchUp(&st, 0)
	time.Sleep(500 * time.Millisecond) // idle: five write timeouts
	g.apply("a", strings.Repeat("big", 10000), 1, true)
	st.apply(t, s.expect("delta", 1))
}

// One connection carries several views: per view, a snapshot and then its
// deltas in order; each id lists every view's version, and resuming with it
// gets each view's missed deltas.
func TestMultiplexedStreamKeepsEachViewInOrderAndResumes(t *testing.T) {
	g := startGateway(t, defaultServe())
	s := g.openPath("/v1/events?view=a&view=b", nil)
	sts := map[string]*state{"a": {}, "b": {}}
	viewOf := func(e sseEvent) string {
		var m struct{ View string }
		if err := json.Unmarshal([]byte(e.Data), &m); err != nil {
			t.Fatal(err)
		}
		return m.View
	}
	// apply checks the event against its view's state; the id is the
	// composite, so state.apply's id check gets the view's own version.
	apply := func(e sseEvent) string {
		v := viewOf(e)
		var ver struct {
			Version int64
			Epoch   string
		}
		json.Unmarshal([]byte(e.Data), &ver)
		own := e
		own.ID = strconv.FormatInt(ver.Version, 10) + "@" + ver.Epoch
		sts[v].apply(t, own)
		return e.ID
	}
	apply(s.next())
	apply(s.next())
	for i := range 10 {
		g.apply("a", fmt.Sprintf("g%d", i%3), 1, true)
		g.apply("b", "z", 1, true)
	}
	var lastID string
	for sts["a"].version < 10 || sts["b"].version < 10 {
		lastID = apply(s.next())
	}
	if want := "a:" + id(10) + ",b:" + id(10); lastID != want {
		t.Fatalf("last id %q, want %s", lastID, want)
	}
	s.close()
	g.apply("a", "g0", 1, true)
	g.apply("b", "z", 1, true)
	w := g.open("b", nil) // wait until the gateway has b's version 11
	for w.next().version(t) < 11 {
	}
	w.close()
	r := g.openPath("/v1/events?view=a&view=b", http.Header{"Last-Event-ID": {lastID}})
	var got []string
	for range 2 {
		e := r.next()
		got = append(got, e.Event+":"+viewOf(e))
		apply(e)
	}
	slices.Sort(got)
	if strings.Join(got, " ") != "delta:a delta:b" {
		t.Fatalf("resumed with %v, want one delta of each view", got)
	}
	for _, v := range []string{"a", "b"} {
		if snap := g.snapshot(v); !sts[v].equals(snap) {
			t.Errorf("view %s: state %v at %d; the view holds %v at %d", v, sts[v].n, sts[v].version, snap.Measures["n"], snap.Version)
		}
	}
}

// On a Redis Cluster the daemon publishes with SPUBLISH, which only a
// sharded subscription on the view's node receives; views live on
// different nodes.
func TestClusterStreamsThroughShardedSubscriptions(t *testing.T) {
	rdb := redis.NewClusterClient(&redis.ClusterOptions{Addrs: testenv.RedisCluster(t)})
	t.Cleanup(func() { rdb.Close() })
	g := startGatewayOn(t, defaultServe(), 0, rdb)
	s := g.openPath("/v1/events?view=a&view=b", nil)
	seen := map[string]int64{}
	for range 2 {
		e := s.next()
		if e.Event != "snapshot" {
			t.Fatalf("first events: %s %s", e.Event, e.ID)
		}
	}
	for range 5 {
		g.apply("a", "x", 1, true)
		g.apply("b", "y", 1, true)
	}
	for seen["a"] < 5 || seen["b"] < 5 {
		e := s.next()
		var m deltaMsg
		if err := json.Unmarshal([]byte(e.Data), &m); err != nil || e.Event != "delta" {
			t.Fatalf("event %s %q: %v", e.Event, e.Data, err)
		}
		if m.Version != seen[m.View]+1 {
			t.Fatalf("view %s: version %d after %d", m.View, m.Version, seen[m.View])
		}
		seen[m.View] = m.Version
	}
}

// A Redis crash and restart (with its data) cuts the gateway's
// subscription; the gateway subscribes again and its clients' state
// converges to the view's, through deltas or a fresh snapshot, without
// reconnecting.
func TestStreamHealsAfterRedisRestart(t *testing.T) {
	rs := testenv.NewRedis(t, testenv.AppendOnly())
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr()})
	t.Cleanup(func() { rdb.Close() })
	g := startGatewayOn(t, defaultServe(), 0, rdb)
	g.apply("a", "x", 1, true)
	s := g.open("a", nil)
	var st state
	s.catchUp(&st, 1)
	rs.Stop()
	rs.Start()
	var v int64
	testenv.WaitFor(t, 30*time.Second, "Redis to answer again", func() bool { return rdb.Ping(context.Background()).Err() == nil })
	for range 3 {
		v = g.apply("a", "y", 1, true)
	}
	for st.version < v {
		st.apply(t, s.next())
	}
	if snap := g.snapshot("a"); !st.equals(snap) {
		t.Fatalf("state %v at %d; the view holds %v at %d", st.n, st.version, snap.Measures["n"], snap.Version)
	}
}

// A view marked lost gets no new version and no message; the gateway still
// tells its clients, with a snapshot that carries the mark.
func TestLostMarkReachesClients(t *testing.T) {
	g := startGateway(t, defaultServe())
	g.apply("a", "x", 1, true)
	s := g.open("a", nil)
	var st state
	s.catchUp(&st, 1)
	if err := g.rdb.HSet(context.Background(), publish.KeysFor(g.prefix, "a").Meta(), "lost", "test: data lost").Err(); err != nil {
		t.Fatal(err)
	}
	e := s.expect("snapshot", 1)
	var snap publish.Snapshot
	if err := json.Unmarshal([]byte(e.Data), &snap); err != nil {
		t.Fatal(err)
	}
	if snap.Lost != "test: data lost" {
		t.Fatalf("snapshot after the mark: lost %q", snap.Lost)
	}
}

// The gateway's metrics count clients, snapshots by reason and refusals.
func TestMetricsCountClientsSnapshotsAndRefusals(t *testing.T) {
	g := startGateway(t, defaultServe())
	s := g.open("a", nil)
	var st state
	s.catchUp(&st, 0)
	g.apply("a", "x", 1, false) // lost: the next message shows a gap
	g.apply("a", "x", 1, true)
	st.apply(t, s.expect("snapshot", 2))
	rec := httptest.NewRecorder()
	g.srv.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	text := rec.Body.String()
	for _, want := range []string{
		`streamtally_gateway_clients{view="a"} 1`,
		`streamtally_gateway_clients{view="b"} 0`,
		`streamtally_gateway_snapshots_total{reason="gap",view="a"} 1`,
		`streamtally_gateway_events_total{kind="snapshot",view="a"} 2`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// rebuild does what a rebuild or backfill's swap does: it replaces the
// measure hash of view (key) with counts, bumps the version, and then
// publishes a reset message, which carries no deltas.
func (g *gw) rebuild(view, key string, counts map[string]any) int64 {
	g.t.Helper()
	ctx := context.Background()
	k := publish.KeysFor(g.prefix, view)
	var ver *redis.IntCmd
	_, err := g.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		if len(counts) > 0 {
			p.HSet(ctx, key, counts)
		}
		ver = p.HIncrBy(ctx, k.Meta(), "version", 1)
		p.HSet(ctx, k.Meta(), "updated_ms", time.Now().UnixMilli())
		return nil
	})
	if err != nil {
		g.t.Fatal(err)
	}
	msg := fmt.Sprintf(`{"view":%q,"version":%d,"reset":true,"ts_ms":%d}`, view, ver.Val(), time.Now().UnixMilli())
	if err := g.rdb.Do(ctx, publishCommand(g.rdb), k.Channel(), msg).Err(); err != nil {
		g.t.Fatal(err)
	}
	return ver.Val()
}

func TestResetSendsSnapshotWithTheNewNumbers(t *testing.T) {
	serve := defaultServe()
	g := startGateway(t, serve)
	for i := range 3 {
		g.apply("a", fmt.Sprintf("g%d", i), 1, true)
	}
	s := g.open("a", nil)
	var st state
	s.catchUp(&st, 3)
	mux := g.openPath("/v1/events?view=a&view=b", nil)
	var stMux state
	muxNext := func() sseEvent { return viewEvent(t, mux, "a") }
	first := muxNext()
	stMux.apply(t, first)
	for stMux.version < 3 {
		stMux.apply(t, muxNext())
	}

	v := g.rebuild("a", publish.KeysFor(g.prefix, "a").Measure("n"), map[string]any{"g0": 5, "r": 2})
	e := s.next()
	if e.Event != "snapshot" || e.version(t) < v {
		t.Fatalf("after a reset to version %d: %s %s, want a snapshot at %d or later", v, e.Event, e.ID, v)
	}
	st.apply(t, e)
	stMux.apply(t, muxNext())
	if st.n["g0"] != 5 || st.n["r"] != 2 || len(st.n) != 2 || stMux.n["g0"] != 5 || len(stMux.n) != 2 {
		t.Fatalf("after the reset: %v, multiplexed %v; want g0=5 r=2", st.n, stMux.n)
	}
	g.apply("a", "r", 1, true)
	st.apply(t, s.expect("delta", v+1))
	stMux.apply(t, muxNext())
	if snap := g.snapshot("a"); !st.equals(snap) || !stMux.equals(snap) {
		t.Fatalf("state %v at %d; the view holds %v at %d", st.n, st.version, snap.Measures["n"], snap.Version)
	}

	// The resume ring does not reach across the reset: a client from
	// before it gets a snapshot, one from the reset on gets the deltas.
	before := g.open("a", http.Header{"Last-Event-ID": {id(3)}})
	var sb state
	before.catchUp(&sb, v+1)
	if sb.n["r"] != 3 || sb.n["g1"] != 0 {
		t.Fatalf("resumed from before the reset: %v", sb.n)
	}
	g.open("a", http.Header{"Last-Event-ID": {id(v)}}).expect("delta", v+1)
}

func TestResetOfBucketedViewSendsFreshSeries(t *testing.T) {
	g := startBucketGateway(t)
	now := time.Now()
	g.applyAt(now, "x", 1, true)
	g.applyAt(now.Add(-time.Hour), "y", 1, true)
	s := g.open("h", nil)
	var st bucketState
	st.catchUp(t, s.next, 2)

	// A backfill recounted the current hour.
	k := publish.KeysFor(g.prefix, "h")
	v := g.rebuild("h", k.BucketMeasure(hourName(now), "n"), map[string]any{"x": 40, "w": 2})
	e := s.next()
	if e.Event != "snapshot" || e.version(t) < v {
		t.Fatalf("after a reset to version %d: %s %s, want a snapshot at %d or later", v, e.Event, e.ID, v)
	}
	st.apply(t, e)
	want := hourName(now.Add(-time.Hour)) + "/y=1 " + hourName(now) + "/w=2 " + hourName(now) + "/x=40"
	if st.String() != want {
		t.Fatalf("after the reset %s, want %s", &st, want)
	}
}

// Redis loses its last writes with the reader that made them (a failover
// to a replica that missed them); the next reader issues the lost version
// numbers again, with other contents, under a new epoch. A client at the
// old history's newest version must not take the new history's versions
// for ones it has, nor apply the next one on top of the old state: every
// client gets the new epoch's snapshot, and resuming from the old epoch
// gets one too.
func TestNewEpochSendsEveryClientItsSnapshot(t *testing.T) {
	g := startGateway(t, defaultServe())
	ctx := context.Background()
	k := publish.KeysFor(g.prefix, "a")
	for range 3 {
		g.apply("a", "x", 1, true)
	}
	dump := map[string]string{}
	for _, key := range []string{k.Meta(), k.Measure("n")} {
		d, err := g.rdb.Dump(ctx, key).Result()
		if err != nil {
			t.Fatal(err)
		}
		dump[key] = d
	}
	s := g.open("a", nil)
	var st state
	s.catchUp(&st, 3)
	g.apply("a", "x", 1, true)
	g.apply("a", "x", 1, true)
	st.apply(t, s.expect("delta", 4))
	st.apply(t, s.expect("delta", 5))
	lastID := id(5)

	// Versions 4 and 5 are lost; the next reader starts epoch e2.
	for key, d := range dump {
		if err := g.rdb.RestoreReplace(ctx, key, 0, d).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := g.rdb.HSet(ctx, k.Meta(), "epoch", "e2").Err(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		g.apply("a", "y", 1, true) // versions 4, 5, 6 of e2
	}
	for st.epoch != "e2" || st.version < 6 {
		st.apply(t, s.next())
	}
	if snap := g.snapshot("a"); !st.equals(snap) {
		t.Fatalf("client at %s %d with %v; the view holds %v at %s %d", st.epoch, st.version, st.n, snap.Measures["n"], snap.Epoch, snap.Version)
	}
	r := g.open("a", http.Header{"Last-Event-ID": {lastID}})
	var rs state
	r.catchUp(&rs, 6)
	if rs.epoch != "e2" || !rs.equals(g.snapshot("a")) {
		t.Fatalf("resumed from %s of the old epoch to %s %d %v", lastID, rs.epoch, rs.version, rs.n)
	}
}
