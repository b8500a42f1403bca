package publish

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
)

// choppyConn writes in pieces of a few bytes with pauses between them, so
// the server receives a pipeline over many reads.
type choppyConn struct{ net.Conn }

func (c *choppyConn) Write(b []byte) (int, error) {
	const piece = 24
	n := 0
	for len(b) > 0 {
		k := min(piece, len(b))
		m, err := c.Conn.Write(b[:k])
		n += m
		if err != nil {
			return n, err
		}
		b = b[k:]
		if len(b) > 0 {
			time.Sleep(100 * time.Microsecond)
		}
	}
	return n, nil
}

func TestSnapshotReadsEverything(t *testing.T) {
	ctx := context.Background()
	v, other := platformView("by_platform"), platformView("other")
	f := newFixture(t, v, other)
	f.store.now = func() time.Time { return time.UnixMilli(1700000000123) }

	s, err := f.store.Snapshot(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	if s.View != v.Name || s.Version != 0 || s.UpdatedMS != 0 || len(s.Measures["amount"]) != 0 || len(s.Measures["donations"]) != 0 {
		t.Fatalf("snapshot of an empty view = %+v", s)
	}

	f.apply(mkDelta(v, "s", "", "1", map[string]gd{"Web": {2, []string{"10.5"}}, "Phone": {1, []string{"-3"}}}))
	f.apply(mkDelta(v, "s", "1", "2", map[string]gd{"Web": {0, []string{"0.5"}}}))
	f.apply(mkDelta(other, "s", "", "1", map[string]gd{"Mail": {1, []string{"1"}}}))

	s, err = f.store.Snapshot(ctx, v)
	if err != nil {
		t.Fatal(err)
	}
	want := &Snapshot{
		View: v.Name, Version: 2, UpdatedMS: 1700000000123,
		Measures: map[string]map[string]string{
			"amount":    {"Web": "11", "Phone": "-3"},
			"donations": {"Web": "2", "Phone": "1"},
		},
	}
	if s.View != want.View || s.Version != want.Version || s.UpdatedMS != want.UpdatedMS ||
		!maps.EqualFunc(s.Measures, want.Measures, maps.Equal) {
		t.Errorf("snapshot\n got %+v\nwant %+v", s, want)
	}
}

// TestSnapshotIsAtomic reads snapshots while a writer applies deltas that
// each move one item and an amount from one group to the other. Totals are
// constant and the state at every version is known in advance, so a
// snapshot that mixed two versions, or a version with the wrong numbers,
// fails.
func TestSnapshotIsAtomic(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v := platformView("by_platform")
	f := newFixture(t, v)

	type state struct {
		countA, countB   int64
		amountA, amountB aggregate.Decimal
	}
	// More moves than the writer gets to: it stops once the reader has
	// taken enough snapshots.
	const moves = 30000
	r := rand.New(rand.NewPCG(5, 5))
	deltas := make([]*aggregate.Delta, 0, moves+1)
	states := make([]state, 0, moves+2) // states[v] is the state at version v
	st := state{countA: 20, countB: 20, amountA: aggregate.MustDecimal("1000.01"), amountB: aggregate.MustDecimal("-0.01")}
	states = append(states, state{}, st)
	deltas = append(deltas, mkDelta(v, "s", "", "1", map[string]gd{
		"A": {st.countA, []string{st.amountA.String()}}, "B": {st.countB, []string{st.amountB.String()}},
	}))
	totalCount, totalAmount := st.countA+st.countB, st.amountA.Add(st.amountB).String()
	for i := 0; i < moves; i++ {
		dir := int64(1)
		if r.IntN(2) == 0 && st.countA > 1 || st.countB == 1 {
			dir = -1
		}
		x := aggregate.MustDecimal(fmt.Sprintf("%d.%03d", r.IntN(50), r.IntN(1000)))
		if x.IsZero() {
			x = aggregate.MustDecimal("0.001")
		}
		if dir < 0 {
			x = x.Neg()
		}
		st.countA += dir
		st.countB -= dir
		st.amountA = st.amountA.Add(x)
		st.amountB = st.amountB.Add(x.Neg())
		states = append(states, st)
		deltas = append(deltas, mkDelta(v, "s", fmt.Sprint(i+1), fmt.Sprint(i+2), map[string]gd{
			"A": {dir, []string{x.String()}}, "B": {-dir, []string{x.Neg().String()}},
		}))
	}

	// Snapshots go over a connection that dribbles each request out in
	// small pieces. redis-server runs the commands of one read together, so
	// over a normal connection even a plain pipeline would look atomic;
	// split up, only MULTI/EXEC keeps the writer's scripts out of a
	// snapshot.
	slow := redis.NewClient(&redis.Options{
		Addr: f.c.Options().Addr,
		Dialer: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &choppyConn{Conn: c}, nil
		},
	})
	t.Cleanup(func() { slow.Close() })
	reader := NewRedis(slow, f.prefix, []*aggregate.View{v})

	done := make(chan error, 1)
	stop := make(chan struct{})
	var applied int64
	go func() {
		for _, d := range deltas {
			select {
			case <-stop:
				done <- nil
				return
			default:
			}
			if err := f.store.Apply(ctx, d); err != nil {
				done <- err
				return
			}
			applied++
		}
		done <- nil
	}()

	var snapshots, distinct int
	last := int64(-1)
	check := func(s *Snapshot) {
		t.Helper()
		snapshots++
		if s.Version < last {
			t.Fatalf("version went back from %d to %d", last, s.Version)
		}
		if s.Version != last {
			distinct++
		}
		last = s.Version
		if s.Version == 0 {
			if len(s.Measures["amount"])+len(s.Measures["donations"]) != 0 {
				t.Fatalf("numbers without a version: %v", s.Measures)
			}
			return
		}
		want := states[s.Version]
		cA, cB := s.Measures["donations"]["A"], s.Measures["donations"]["B"]
		aA, aB := s.Measures["amount"]["A"], s.Measures["amount"]["B"]
		// The invariant: totals never change.
		sumA, errA := aggregate.ParseDecimal(aA)
		sumB, errB := aggregate.ParseDecimal(aB)
		if errA != nil || errB != nil {
			t.Fatalf("version %d: amounts %q %q do not parse", s.Version, aA, aB)
		}
		var nA, nB int64
		fmt.Sscan(cA, &nA)
		fmt.Sscan(cB, &nB)
		if nA+nB != totalCount || sumA.Add(sumB).String() != totalAmount {
			t.Fatalf("version %d: totals %d and %s, want %d and %s (A=%s/%s B=%s/%s)",
				s.Version, nA+nB, sumA.Add(sumB), totalCount, totalAmount, cA, aA, cB, aB)
		}
		// And the numbers are those of exactly that version.
		if cA != fmt.Sprint(want.countA) || cB != fmt.Sprint(want.countB) ||
			aA != want.amountA.String() || aB != want.amountB.String() {
			t.Fatalf("version %d: got A=%s/%s B=%s/%s, want A=%d/%s B=%d/%s", s.Version,
				cA, aA, cB, aB, want.countA, want.amountA, want.countB, want.amountB)
		}
	}
	// Alternate slow snapshots, which span many writes, with fast ones.
	const wantSlow = 100
	slowTaken := 0
	for writing := true; writing; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("writer: %v", err)
			}
			writing = false
		default:
		}
		for _, rd := range []*Redis{reader, f.store} {
			s, err := rd.Snapshot(ctx, v)
			if err != nil {
				t.Fatalf("Snapshot: %v", err)
			}
			check(s)
		}
		if slowTaken++; slowTaken == wantSlow {
			close(stop)
		}
	}
	// done was received, so applied is safe to read.
	if last != applied {
		t.Errorf("last snapshot at version %d, want %d", last, applied)
	}
	t.Logf("%d snapshots (%d slow) saw %d distinct versions of %d", snapshots, slowTaken, distinct, applied)
	if distinct < wantSlow/2 {
		t.Errorf("only %d distinct versions seen: the snapshots did not overlap the writer", distinct)
	}
}
