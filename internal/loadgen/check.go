package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/publish"
)

// Diff is one counter that differs from the full-scan recomputation.
type Diff struct {
	View, Measure, Group string
	Want, Got            string // "" when absent
}

func (d Diff) String() string {
	return fmt.Sprintf("%s.%s[%q]: redis %q, scan %q", d.View, d.Measure, d.Group, d.Got, d.Want)
}

// Expected computes what every measure of v should hold for items.
func Expected(v *aggregate.View, totals map[string]*aggregate.GroupDelta) map[string]map[string]string {
	out := map[string]map[string]string{}
	for i, m := range v.Measures {
		vals := map[string]string{}
		si := v.SumIndex(i)
		for g, t := range totals {
			if t.Count == 0 {
				continue
			}
			if si < 0 {
				vals[g] = strconv.FormatInt(t.Count, 10)
			} else {
				vals[g] = t.Sums[si].String()
			}
		}
		out[m.Name] = vals
	}
	return out
}

// Check scans table, recomputes every view and compares it with the
// snapshot in Redis, exactly, as strings.
func Check(ctx context.Context, ddb *dynamodb.Client, table string, store *publish.Redis, views []*aggregate.View) ([]Diff, error) {
	items, err := Scan(ctx, ddb, table)
	if err != nil {
		return nil, err
	}
	var diffs []Diff
	for _, v := range views {
		snap, err := store.Snapshot(ctx, v)
		if err != nil {
			return nil, err
		}
		diffs = append(diffs, Compare(v.Name, Expected(v, v.Totals(items)), snap.Measures)...)
	}
	return diffs, nil
}

// Compare lists the differences between two sets of measures.
func Compare(view string, want, got map[string]map[string]string) []Diff {
	var diffs []Diff
	for m, wv := range want {
		gv := got[m]
		for g, w := range wv {
			if gv[g] != w {
				diffs = append(diffs, Diff{view, m, g, w, gv[g]})
			}
		}
		for g, x := range gv {
			if _, ok := wv[g]; !ok {
				diffs = append(diffs, Diff{view, m, g, "", x})
			}
		}
	}
	sort.Slice(diffs, func(i, j int) bool { return diffs[i].String() < diffs[j].String() })
	return diffs
}

func asErr[T error](err error, target *T) bool { return errors.As(err, target) }
