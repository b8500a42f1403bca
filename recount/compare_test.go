package recount

import (
	"slices"
	"testing"

	"github.com/streamtally/streamtally"
)

// The table's side of every comparison (verify, the chaos suite, the
// load generator's check) is View.Values of a scan: exact decimals as
// text, and no trace of a group whose items all left.
func TestValuesOfAScanAreExactAndLeaveEmptyGroupsOut(t *testing.T) {
	v := testView()
	items := []streamtally.Image{
		img("1", "web", "0.1"), img("2", "web", "0.2"), img("3", "ios", "1e-30"), img("4", "ios", "-1e-30"),
	}
	got := v.Values(v.Totals(items))
	want := map[string]map[string]string{
		"amount": {"web": "0.3", "ios": "0"},
		"n":      {"web": "2", "ios": "2"},
	}
	if len(Compare(v.Name, want, got)) > 0 || len(Compare(v.Name, got, want)) > 0 {
		t.Fatalf("values of the scan %v, want %v", got, want)
	}
	if vals := v.Values(v.Totals(items[:2])); vals["n"]["ios"] != "" || vals["amount"]["ios"] != "" {
		t.Errorf("a group without items shows as %v", vals)
	}
}

func TestCompareNamesEveryDifference(t *testing.T) {
	table := map[string]map[string]string{"n": {"web": "2", "ios": "1"}, "amount": {"web": "0.3"}}
	for _, c := range []struct {
		name  string
		store map[string]map[string]string
		want  []string
	}{
		{"equal", map[string]map[string]string{"n": {"web": "2", "ios": "1"}, "amount": {"web": "0.3"}}, nil},
		{"a value differs, exactly as text", map[string]map[string]string{"n": {"web": "2", "ios": "1"}, "amount": {"web": "0.30"}},
			[]string{`view v measure amount group "web": table 0.3, redis 0.30`}},
		{"a group is missing", map[string]map[string]string{"n": {"web": "2"}, "amount": {"web": "0.3"}},
			[]string{`view v measure n group "ios": table 1, redis (none)`}},
		{"a group the table does not have", map[string]map[string]string{"n": {"web": "2", "ios": "1", "tv": "0"}, "amount": {"web": "0.3"}},
			[]string{`view v measure n group "tv": table (none), redis 0`}},
		{"a measure only the store has", map[string]map[string]string{"n": {"web": "2", "ios": "1"}, "amount": {"web": "0.3"}, "old": {"web": "7"}},
			[]string{`view v measure old group "web": table (none), redis 7`}},
		{"a measure the store lacks", map[string]map[string]string{"n": {"web": "2", "ios": "1"}},
			[]string{`view v measure amount group "web": table 0.3, redis (none)`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, d := range Compare("v", table, c.store) {
				got = append(got, d.String())
			}
			if !slices.Equal(got, c.want) {
				t.Errorf("Compare:\n got %q\nwant %q", got, c.want)
			}
		})
	}
}
