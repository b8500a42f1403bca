package aggregate

import (
	"slices"
	"testing"

	"github.com/streamtally/streamtally"
)

// TestFoldGroupKeys checks how group_by values become group keys, through
// Fold so that the whole path from image to delta is covered.
func TestFoldGroupKeys(t *testing.T) {
	cases := []struct {
		name    string
		groupBy []string
		img     streamtally.Image
		want    string
	}{
		{"string", []string{"platform"}, streamtally.Image{"platform": attrS("Web")}, "Web"},
		{"empty string", []string{"platform"}, streamtally.Image{"platform": attrS("")}, ""},
		{"number is canonical", []string{"tier"}, streamtally.Image{"tier": attrN("10.50")}, "10.5"},
		{"number with exponent is canonical", []string{"tier"}, streamtally.Image{"tier": attrN("1.5E+1")}, "15"},
		{"negative zero is zero", []string{"tier"}, streamtally.Image{"tier": attrN("-0.00")}, "0"},
		{"bool true", []string{"vip"}, streamtally.Image{"vip": &streamtally.Bool{Value: true}}, "true"},
		{"bool false", []string{"vip"}, streamtally.Image{"vip": &streamtally.Bool{Value: false}}, "false"},
		{
			"several attributes join with a bar and escape bar and backslash",
			[]string{"a", "b"},
			streamtally.Image{"a": attrS("a|b"), "b": attrS(`c\d`)},
			`a\|b|c\\d`,
		},
		{
			"mixed types in order of group_by",
			[]string{"vip", "platform", "tier"},
			streamtally.Image{"platform": attrS("Web"), "tier": attrN("007"), "vip": &streamtally.Bool{Value: true}},
			"true|Web|7",
		},
		{
			"dotted path reaches into a map",
			[]string{"meta.platform"},
			streamtally.Image{"meta": attrM(streamtally.Image{"platform": attrS("Phone")}), "platform": attrS("Web")},
			"Phone",
		},
		{
			"dotted path two levels deep",
			[]string{"meta.device.os"},
			streamtally.Image{"meta": attrM(streamtally.Image{"device": attrM(streamtally.Image{"os": attrS("ios")})})},
			"ios",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newView("v", c.groupBy, "n=count")
			var rejected []Reason
			d := v.Fold("s", "", numbered("s", 1, insert(c.img)), func(r Rejection) { rejected = append(rejected, r.Reason) })
			if len(rejected) > 0 {
				t.Fatalf("rejected: %+v", rejected)
			}
			checkGroups(t, v, d.Groups, map[string]want{c.want: {count: 1}})
		})
	}
}

func TestFoldRejectsImagesThatCannotContribute(t *testing.T) {
	ok := func(extra streamtally.Image) streamtally.Image {
		img := streamtally.Image{"platform": attrS("Web"), "amount": attrN("1")}
		for k, v := range extra {
			if v == nil {
				delete(img, k)
			} else {
				img[k] = v
			}
		}
		return img
	}
	cases := []struct {
		name    string
		groupBy string
		img     streamtally.Image
		kind    string
	}{
		{"missing group_by", "platform", ok(streamtally.Image{"platform": nil}), "missing_group_by"},
		{"dotted path through a non-map", "platform.name", ok(nil), "missing_group_by"},
		{"dotted path to a missing key", "meta.platform", ok(streamtally.Image{"meta": attrM(streamtally.Image{})}), "missing_group_by"},
		{"group_by NULL", "platform", ok(streamtally.Image{"platform": &streamtally.Null{Value: true}}), "bad_group_by"},
		{"group_by L", "platform", ok(streamtally.Image{"platform": &streamtally.L{Value: []streamtally.Value{attrS("Web")}}}), "bad_group_by"},
		{"group_by M", "platform", ok(streamtally.Image{"platform": attrM(streamtally.Image{"x": attrS("Web")})}), "bad_group_by"},
		{"group_by SS", "platform", ok(streamtally.Image{"platform": &streamtally.SS{Value: []string{"Web"}}}), "bad_group_by"},
		{"group_by NS", "platform", ok(streamtally.Image{"platform": &streamtally.NS{Value: []string{"1"}}}), "bad_group_by"},
		{"group_by B", "platform", ok(streamtally.Image{"platform": &streamtally.B{Value: []byte("Web")}}), "bad_group_by"},
		{"group_by N that does not parse", "platform", ok(streamtally.Image{"platform": attrN("twelve")}), "bad_number"},
		{"group_by N beyond DynamoDB's range", "platform", ok(streamtally.Image{"platform": attrN("1E+126")}), "bad_number"},
		{"missing sum attribute", "platform", ok(streamtally.Image{"amount": nil}), "missing_sum"},
		{"sum attribute of type S", "platform", ok(streamtally.Image{"amount": attrS("12")}), "bad_sum"},
		{"sum attribute of type NULL", "platform", ok(streamtally.Image{"amount": &streamtally.Null{Value: true}}), "bad_sum"},
		{"sum N that does not parse", "platform", ok(streamtally.Image{"amount": attrN("1.2.3")}), "bad_number"},
		{"sum N with too many decimals", "platform", ok(streamtally.Image{"amount": attrN("1E-200")}), "bad_number"},
		{"sum N with 39 significant digits", "platform", ok(streamtally.Image{"amount": attrN("123456789012345678901234567890123456789")}), "bad_number"},
		{"sum N below DynamoDB's smallest magnitude", "platform", ok(streamtally.Image{"amount": attrN("-9E-131")}), "bad_number"},
		{"sum N empty", "platform", ok(streamtally.Image{"amount": attrN("")}), "bad_number"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			v := newView("v", []string{c.groupBy}, "n=count", "amount=sum(amount)")
			recs := numbered("s", 1, insert(c.img))
			var got []Rejection
			d := v.Fold("s", "", recs, func(r Rejection) { got = append(got, r) })
			if !d.Empty() {
				t.Errorf("a rejected image contributed: %v", d.Groups)
			}
			if len(got) != 1 {
				t.Fatalf("got %d rejections, want 1", len(got))
			}
			r := got[0]
			if r.Reason.Kind != c.kind {
				t.Errorf("Reason.Kind = %q (%s), want %q", r.Reason.Kind, r.Reason.Text, c.kind)
			}
			if r.Reason.Text == "" || r.View != "v" || r.Record != &recs[0] {
				t.Errorf("rejection lacks text, view or record: %+v", r)
			}
		})
	}
}

func TestSplitGroupInvertsGroupKeys(t *testing.T) {
	cases := [][]string{
		{"Web"},
		{""},
		{"a|b", `c\d`},
		{"", ""},
		{"|", `\`},
		{`\|`, `|\`},
		{`x\`, "y"},
		{"a", "b", "c"},
		{`\\`, "||", `\|\|`},
	}
	keys := map[string][]string{}
	for _, vals := range cases {
		attrs := make([]string, len(vals))
		img := streamtally.Image{}
		for i, s := range vals {
			attrs[i] = string(rune('a' + i))
			img[attrs[i]] = attrS(s)
		}
		c, _, ok := newView("v", attrs, "n=count").Contribute(img)
		if !ok {
			t.Fatalf("%q: rejected", vals)
		}
		if got := SplitGroup(c.Group); !slices.Equal(got, vals) {
			t.Errorf("SplitGroup(%q) = %q, want %q", c.Group, got, vals)
		}
		if prev, dup := keys[c.Group]; dup {
			t.Errorf("%q and %q share the group key %q", prev, vals, c.Group)
		}
		keys[c.Group] = vals
	}
	if got := SplitGroup(`a\|b|c\\d`); !slices.Equal(got, []string{"a|b", `c\d`}) {
		t.Errorf(`SplitGroup("a\|b|c\\d") = %q`, got)
	}
}

func TestNewViewOrdersSumSlotsByMeasure(t *testing.T) {
	v := newView("v", []string{"p"}, "z=count", "b=sum(y)", "a=sum(x)")
	if v.SumCount() != 2 {
		t.Fatalf("SumCount = %d, want 2", v.SumCount())
	}
	names := []string{}
	for _, m := range v.Measures {
		names = append(names, m.Name)
	}
	if !slices.Equal(names, []string{"a", "b", "z"}) {
		t.Errorf("measures = %q", names)
	}
	if got := []int{v.SumIndex(0), v.SumIndex(1), v.SumIndex(2)}; !slices.Equal(got, []int{0, 1, -1}) {
		t.Errorf("SumIndex = %v, want [0 1 -1]", got)
	}
	c, _, ok := v.Contribute(streamtally.Image{"p": attrS("P"), "x": attrN("1"), "y": attrN("2")})
	if !ok || c.Sums[0].String() != "1" || c.Sums[1].String() != "2" {
		t.Errorf("contribution = %+v, want sums [1 2]", c)
	}
}

func TestKeyString(t *testing.T) {
	got := KeyString(streamtally.Image{
		"email":     attrS("a@test.com"),
		"donatedAt": attrS("2019-08-07T07:26:56"),
		"n":         attrN("3"),
		"b":         &streamtally.B{Value: []byte{1}},
	})
	if want := "b=<B>,donatedAt=2019-08-07T07:26:56,email=a@test.com,n=3"; got != want {
		t.Errorf("KeyString = %q, want %q", got, want)
	}
}
