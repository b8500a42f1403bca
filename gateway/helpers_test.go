package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/gateway"
	"github.com/streamtally/streamtally/internal/testenv"
	"github.com/streamtally/streamtally/publish"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var prefixSeq atomic.Int64

// The views of the protocol tests: a and b, one count measure each.
var testViews = []config.View{
	countView("a"),
	countView("b"),
}

// countView is a view of one count measure by g, as Load leaves it.
func countView(name string) config.View {
	return config.View{Name: name, GroupBy: []string{"g"}, Measures: map[string]string{"n": "count"},
		Spec: aggregate.Spec{Name: name, GroupBy: []string{"g"}, Measures: []aggregate.MeasureSpec{{Name: "n", Func: "count"}}}}
}

// gw is a running gateway on the shared redis-server, under a prefix of
// its own, with a writer that plays the daemon's part of the contract.
type gw struct {
	t      *testing.T
	url    string
	rdb    redis.UniversalClient
	prefix string
	log    *testenv.SyncBuffer
	srv    *gateway.Server
}

func defaultServe() config.Serve {
	return config.Serve{Public: true, Heartbeat: 200 * time.Millisecond, ClientBuffer: 64, History: 64}
}

func startGateway(t *testing.T, s config.Serve) *gw {
	t.Helper()
	return startGatewayWith(t, s, 0)
}

func startGatewayWith(t *testing.T, s config.Serve, writeTimeout time.Duration) *gw {
	t.Helper()
	rdb := redis.NewClient(&redis.Options{Addr: testenv.Redis(t)})
	t.Cleanup(func() { rdb.Close() })
	return startGatewayOn(t, s, writeTimeout, rdb)
}

// startGatewayOn runs a gateway on rdb, a client of a server or a cluster.
func startGatewayOn(t *testing.T, s config.Serve, writeTimeout time.Duration, rdb redis.UniversalClient) *gw {
	t.Helper()
	return startGatewayFull(t, s, writeTimeout, rdb, newPrefix(), testViews)
}

func newPrefix() string { return fmt.Sprintf("gw%d.%d", time.Now().UnixNano(), prefixSeq.Add(1)) }

func startGatewayFull(t *testing.T, s config.Serve, writeTimeout time.Duration, rdb redis.UniversalClient, prefix string, views []config.View) *gw {
	t.Helper()
	g := &gw{t: t, log: &testenv.SyncBuffer{}, rdb: rdb, prefix: prefix}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g.url = "http://" + ln.Addr().String()
	g.srv = gateway.New(gateway.Options{
		Serve: s, Client: g.rdb, Prefix: g.prefix, Views: views, WriteTimeout: writeTimeout,
		Log: slog.New(slog.NewJSONHandler(g.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- g.srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if t.Failed() {
			t.Logf("gateway log:\n%s", g.log.String())
		}
	})
	// Until the hub is subscribed, a client's first snapshot may be
	// followed by another rather than by deltas.
	testenv.WaitFor(t, 20*time.Second, "the gateway to subscribe", g.srv.Hub().Ready)
	return g
}

// applyScript does what the daemon's apply script does for one count
// delta: bump the version, change the hash and publish the message, in one
// step. With ARGV[5] = 0 it publishes nothing: a message pub/sub lost.
var applyScript = redis.NewScript(`
local epoch = redis.call('HGET', KEYS[1], 'epoch')
if not epoch then
  epoch = ARGV[7]
  redis.call('HSET', KEYS[1], 'epoch', epoch)
end
local v = redis.call('HINCRBY', KEYS[1], 'version', 1)
redis.call('HSET', KEYS[1], 'updated_ms', ARGV[3])
local n = redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[2])
if n == 0 then redis.call('HDEL', KEYS[2], ARGV[1]) end
if ARGV[5] == '1' then
  redis.call(ARGV[6], KEYS[3], cjson.encode({view = ARGV[4], epoch = epoch, version = v, deltas = {n = {[ARGV[1]] = ARGV[2]}}, ts_ms = tonumber(ARGV[3])}))
end
return v
`)

// apply changes group's count in view by delta and returns the version.
func (g *gw) apply(view, group string, delta int, publishIt bool) int64 {
	g.t.Helper()
	k := publish.KeysFor(g.prefix, view)
	pub := "0"
	if publishIt {
		pub = "1"
	}
	v, err := applyScript.Run(context.Background(), g.rdb, []string{k.Meta(), k.Measure("n"), k.Channel()},
		group, delta, time.Now().UnixMilli(), view, pub, publishCommand(g.rdb), testEpoch).Int64()
	if err != nil {
		g.t.Fatal(err)
	}
	return v
}

// snapshot reads the view's snapshot through the gateway's JSON API.
func (g *gw) snapshot(view string) *publish.Snapshot {
	g.t.Helper()
	resp, err := http.Get(g.url + "/v1/views/" + view)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		g.t.Fatalf("GET /v1/views/%s: %s", view, resp.Status)
	}
	var s publish.Snapshot
	if err := json.NewDecoder(resp.Body).Decode(&s); err != nil {
		g.t.Fatal(err)
	}
	return &s
}

// testEpoch is the epoch the tests' apply scripts give a view that has
// none, as the daemon's apply script does with a fresh one.
const testEpoch = "e1"

// id is the event id of version v of a view in testEpoch.
func id(v int64) string { return strconv.FormatInt(v, 10) + "@" + testEpoch }

// sseEvent is one parsed Server-Sent Event.
type sseEvent struct {
	ID, Event, Data string
}

func (e sseEvent) version(t *testing.T) int64 {
	ver, _, ok := strings.Cut(e.ID, "@")
	v, err := strconv.ParseInt(ver, 10, 64)
	if err != nil || !ok {
		t.Fatalf("event id %q is not version@epoch: %v", e.ID, err)
	}
	return v
}

// stream is one SSE client.
type stream struct {
	t      *testing.T
	resp   *http.Response
	events chan sseEvent
	beats  atomic.Int64
	ended  chan struct{} // closed when the server ends the stream
	err    error         // why, when not EOF; read after ended
}

// open connects to a view's event stream with the given headers.
func (g *gw) open(view string, header http.Header) *stream {
	g.t.Helper()
	return g.openPath("/v1/views/"+view+"/events", header)
}

// openPath connects to the event stream at path.
func (g *gw) openPath(path string, header http.Header) *stream {
	g.t.Helper()
	req, err := http.NewRequest("GET", g.url+path, nil)
	if err != nil {
		g.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		g.t.Fatalf("GET %s: %s", path, resp.Status)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		g.t.Fatalf("Content-Type %q", ct)
	}
	s := &stream{t: g.t, resp: resp, events: make(chan sseEvent, 100000), ended: make(chan struct{})}
	go s.read(resp.Body)
	g.t.Cleanup(s.close)
	return s
}

func (s *stream) read(r io.Reader) {
	defer close(s.ended)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<26)
	var e sseEvent
	var data []string
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			if e.Event != "" || len(data) > 0 {
				e.Data = strings.Join(data, "\n")
				s.events <- e
			}
			e, data = sseEvent{}, nil
		case line == ":":
			s.beats.Add(1)
		case strings.HasPrefix(line, "id: "):
			e.ID = line[4:]
		case strings.HasPrefix(line, "event: "):
			e.Event = line[7:]
		case strings.HasPrefix(line, "data: "):
			data = append(data, line[6:])
		}
	}
	s.err = sc.Err()
}

func (s *stream) close() { s.resp.Body.Close() }

// next waits for the next event; the wait is generous, not a speed target.
func (s *stream) next() sseEvent {
	s.t.Helper()
	select {
	case e := <-s.events:
		return e
	case <-s.ended:
		select {
		case e := <-s.events:
			return e
		default:
		}
		s.t.Fatalf("the stream ended (%v)", s.err)
	case <-time.After(20 * time.Second):
		s.t.Fatal("no event within 20 s")
	}
	return sseEvent{}
}

// expect waits for the next event and checks its kind and version.
func (s *stream) expect(kind string, version int64) sseEvent {
	s.t.Helper()
	e := s.next()
	if e.Event != kind || e.version(s.t) != version {
		s.t.Fatalf("got %s %s, want %s %d (data %s)", e.Event, e.ID, kind, version, e.Data)
	}
	return e
}

type deltaMsg struct {
	View    string                       `json:"view"`
	Version int64                        `json:"version"`
	Epoch   string                       `json:"epoch"`
	Deltas  map[string]map[string]string `json:"deltas"`
}

// state is what a dashboard holds: a snapshot with deltas applied.
type state struct {
	version int64
	epoch   string
	n       map[string]int64
}

func (st *state) apply(t *testing.T, e sseEvent) {
	t.Helper()
	switch e.Event {
	case "snapshot":
		var s publish.Snapshot
		if err := json.Unmarshal([]byte(e.Data), &s); err != nil {
			t.Fatal(err)
		}
		if s.Version != e.version(t) {
			t.Fatalf("snapshot event id %s, version %d", e.ID, s.Version)
		}
		st.version, st.epoch, st.n = s.Version, s.Epoch, map[string]int64{}
		for g, v := range s.Measures["n"] {
			st.n[g], _ = strconv.ParseInt(v, 10, 64)
		}
	case "delta":
		var d deltaMsg
		if err := json.Unmarshal([]byte(e.Data), &d); err != nil {
			t.Fatal(err)
		}
		if d.Version != e.version(t) || d.Version != st.version+1 {
			t.Fatalf("delta id %s version %d after state version %d", e.ID, d.Version, st.version)
		}
		// The state's epoch is "" until the view's first apply begins one.
		if d.Epoch != st.epoch && !(st.epoch == "" && st.version == 0) {
			t.Fatalf("delta %s of epoch %s applied to a state of epoch %s", e.ID, d.Epoch, st.epoch)
		}
		st.version, st.epoch = d.Version, d.Epoch
		for g, v := range d.Deltas["n"] {
			n, _ := strconv.ParseInt(v, 10, 64)
			st.n[g] += n
			if st.n[g] == 0 {
				delete(st.n, g)
			}
		}
	default:
		t.Fatalf("unexpected event %q", e.Event)
	}
}

func (st *state) equals(s *publish.Snapshot) bool {
	if s.Version != st.version || s.Epoch != st.epoch || len(s.Measures["n"]) != len(st.n) {
		return false
	}
	for g, v := range s.Measures["n"] {
		if strconv.FormatInt(st.n[g], 10) != v {
			return false
		}
	}
	return true
}

// catchUp reads a new stream's first events, a snapshot and then any
// deltas that followed it, until st is at version v. The snapshot may be
// older than v: the gateway may not have received the newest message yet.
func (s *stream) catchUp(st *state, v int64) {
	s.t.Helper()
	e := s.next()
	if e.Event != "snapshot" {
		s.t.Fatalf("first event %s %s, want a snapshot", e.Event, e.ID)
	}
	st.apply(s.t, e)
	for st.version < v {
		st.apply(s.t, s.next())
	}
	if st.version != v {
		s.t.Fatalf("caught up to version %d, want %d", st.version, v)
	}
}

// publishCommand is what the daemon publishes with on rdb: SPUBLISH on a
// cluster, PUBLISH otherwise.
func publishCommand(rdb redis.UniversalClient) string {
	if _, ok := rdb.(*redis.ClusterClient); ok {
		return "SPUBLISH"
	}
	return "PUBLISH"
}
