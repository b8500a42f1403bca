package publish

import (
	"fmt"
	"math/big"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
)

// TestMillionTenthsWithoutDrift folds a million INSERT/MODIFY/REMOVE records
// whose amounts alternate +0.10 and -0.10 into 2 000 pre-aggregated deltas
// and applies them through the script. The result must equal, digit for
// digit, the sums over the surviving items computed in integer cents (plus
// one large amount per group). Where a float would drift or round, a single
// wrong digit fails the test.
func TestMillionTenthsWithoutDrift(t *testing.T) {
	const (
		batches   = 2000
		batchSize = 500
	)
	start := time.Now()
	v := platformView("by_platform")
	f := newFixture(t, v)

	// Images are shared: a record only needs the attributes the view reads,
	// and the fold never changes them.
	platforms := []string{"Web", "Phone", "Mail"}
	amounts := []string{"0.10", "-0.10"}
	cents := []int64{10, -10}
	type kind struct{ p, a int }
	images := map[kind]streamtally.Image{}
	for p, pn := range platforms {
		for a, an := range amounts {
			images[kind{p, a}] = streamtally.Image{
				"platform": &streamtally.S{Value: pn},
				"amount":   &streamtally.N{Value: an},
			}
		}
	}

	// One item per platform holds a large amount that is never touched
	// again: every ±0.10 then changes the 25th significant digit, beyond a
	// double (HINCRBYFLOAT's long double keeps ~19), so storing a sum as a
	// float anywhere would show.
	anchors := []string{"123456789012345678901234.5", "-98765432109876543210987.65", "1000000000000000000000000"}
	anchorImages := make([]streamtally.Image, len(platforms))
	for p, pn := range platforms {
		anchorImages[p] = streamtally.Image{
			"platform": &streamtally.S{Value: pn},
			"amount":   &streamtally.N{Value: anchors[p]},
		}
	}

	r := rand.New(rand.NewPCG(10, 1))
	var live []kind // the table: one entry per item
	recs := make([]streamtally.Record, batchSize)
	fence := ""
	seq := int64(49_000_000_000_000_000)
	records := 0
	check := func() {
		t.Helper()
		count := make([]int64, len(platforms))
		sum := make([]int64, len(platforms))
		for _, k := range live {
			count[k.p]++
			sum[k.p] += cents[k.a]
		}
		amount, donations := f.measure(v.Name, "amount"), f.measure(v.Name, "donations")
		for p, pn := range platforms {
			count[p]++
			want := ratString(new(big.Rat).Add(big.NewRat(sum[p], 100), mustRat(anchors[p])))
			if got := amount[pn]; got != want {
				t.Fatalf("after %d records: amount[%s] = %q, want %q", records, pn, got, want)
			}
			if got := donations[pn]; got != fmt.Sprint(count[p]) {
				t.Fatalf("after %d records: donations[%s] = %q, want %d", records, pn, got, count[p])
			}
		}
	}
	for b := 0; b < batches; b++ {
		for i := range recs {
			// The new image's amount alternates +0.10 / -0.10 record by record.
			nk := kind{r.IntN(len(platforms)), records % 2}
			rec := &recs[i]
			seq++
			*rec = streamtally.Record{Shard: "s", SequenceNumber: streamtally.Seq(fmt.Sprint(seq))}
			switch op := r.IntN(10); {
			case b == 0 && i < len(platforms):
				rec.Event, rec.New = streamtally.Insert, anchorImages[i]
			case len(live) == 0 || op < 4:
				rec.Event, rec.New = streamtally.Insert, images[nk]
				live = append(live, nk)
			case op < 8:
				j := r.IntN(len(live))
				rec.Event, rec.Old, rec.New = streamtally.Modify, images[live[j]], images[nk]
				live[j] = nk
			default:
				j := r.IntN(len(live))
				rec.Event, rec.Old = streamtally.Remove, images[live[j]]
				live[j] = live[len(live)-1]
				live = live[:len(live)-1]
			}
			records++
		}
		d := v.Fold("s", streamtally.Seq(fence), recs, func(rj aggregate.Rejection) { t.Fatalf("rejected: %+v", rj.Reason) })
		if d.Records != batchSize {
			t.Fatalf("batch %d folded %d records, want %d", b, d.Records, batchSize)
		}
		if d.Empty() {
			// Never happens with this seed, but an empty delta must not be applied.
			t.Fatalf("batch %d folded to nothing", b)
		}
		f.apply(d)
		fence = string(d.Through)
		if b%200 == 199 {
			check()
		}
	}
	check()
	if records != 1_000_000 {
		t.Fatalf("folded %d records, want 1000000", records)
	}
	if got := f.version(v.Name); got != fmt.Sprint(batches) {
		t.Errorf("version = %s, want %d", got, batches)
	}
	amount := f.measure(v.Name, "amount")
	t.Logf("%d records in %d applies, %v; %d items left; amount %v", records, batches, time.Since(start).Round(time.Millisecond), len(live), amount)
}
