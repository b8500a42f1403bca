package config_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
)

func TestBucketAndWhereAreParsed(t *testing.T) {
	clearEnv(t)
	c := load(t, `
source: {table: T}
views:
  - name: per_hour
    group_by: [platform]
    measures: {donations: count, amount: sum(amount)}
    bucket: {size: 1h, time: donatedAt, retention: 30d}
    where:
      status: paid
      amount: {gte: 10.50, lt: 1E+3}
      platform: [Web, Phone]
      refundedAt: {exists: false}
      donor.Country: {ne: "12", in: [DE, 7, true]}
  - name: per_day_stream
    group_by: [platform]
    measures: {donations: count}
    bucket: {size: 1d12h, time: stream, retention: 90m}
`)
	b := c.Views[0].Spec.Bucket
	if b.Size != time.Hour || b.Retention != 30*24*time.Hour || b.Time != "donatedAt" {
		t.Errorf("bucket = %+v", b)
	}
	if b := c.Views[1].Spec.Bucket; b.Size != 36*time.Hour || b.Retention != 90*time.Minute || b.Time != aggregate.StreamTime {
		t.Errorf("stream bucket = %+v", b)
	}
	n := func(s string) aggregate.Operand { return aggregate.Operand{Type: "N", Text: s} }
	s := func(s string) aggregate.Operand { return aggregate.Operand{Type: "S", Text: s} }
	want := []aggregate.Condition{
		{Attr: "amount", Op: aggregate.OpGte, Operands: []aggregate.Operand{n("10.50")}},
		{Attr: "amount", Op: aggregate.OpLt, Operands: []aggregate.Operand{n("1E+3")}},
		{Attr: "donor.Country", Op: aggregate.OpNe, Operands: []aggregate.Operand{s("12")}},
		{Attr: "donor.Country", Op: aggregate.OpIn, Operands: []aggregate.Operand{s("DE"), n("7"), {Type: "BOOL", Text: "true"}}},
		{Attr: "platform", Op: aggregate.OpIn, Operands: []aggregate.Operand{s("Web"), s("Phone")}},
		{Attr: "refundedAt", Op: aggregate.OpExists, Exists: false},
		{Attr: "status", Op: aggregate.OpEq, Operands: []aggregate.Operand{s("paid")}},
	}
	if got := c.Views[0].Spec.Filter; !reflect.DeepEqual(got, want) {
		t.Errorf("filter =\n%+v\nwant\n%+v", got, want)
	}
	if c.Views[1].Spec.Filter != nil {
		t.Errorf("a view without where has filter %+v", c.Views[1].Spec.Filter)
	}
}

func TestBadBucketsAndFiltersNameTheKey(t *testing.T) {
	const head = "source: {table: T}\nviews:\n  - name: v\n    group_by: [p]\n    measures: {n: count}\n"
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"no size", "    bucket: {time: t, retention: 1d}\n", []string{"views[v].bucket.size", "required"}},
		{"bad size", "    bucket: {size: 1fortnight, time: t, retention: 1d}\n", []string{"views[v].bucket.size", "1fortnight"}},
		{"size below a second", "    bucket: {size: 500ms, time: t, retention: 1d}\n", []string{"views[v].bucket.size", "500ms"}},
		{"fractional seconds", "    bucket: {size: 1500ms, time: t, retention: 1d}\n", []string{"views[v].bucket.size"}},
		{"no time", "    bucket: {size: 1h, retention: 1d}\n", []string{"views[v].bucket.time", "stream"}},
		{"bad time path", "    bucket: {size: 1h, time: a..b, retention: 1d}\n", []string{"views[v].bucket.time"}},
		{"no retention", "    bucket: {size: 1h, time: t}\n", []string{"views[v].bucket.retention"}},
		{"zero retention", "    bucket: {size: 1h, time: t, retention: 0s}\n", []string{"views[v].bucket.retention", "positive"}},
		{"unknown bucket key", "    bucket: {size: 1h, time: t, retention: 1d, align: x}\n", []string{"views[0].bucket.align"}},
		{"where not a map", "    where: [a, b]\n", []string{"views[v].where"}},
		{"unknown operator", "    where: {amount: {between: 3}}\n", []string{"views[v].where.amount.between", "unknown operator"}},
		{"nested map", "    where: {address: {country: DE}}\n", []string{"views[v].where.address.country", "dotted path"}},
		{"null value", "    where: {status: null}\n", []string{"views[v].where.status", "exists: false"}},
		{"exists not a bool", "    where: {status: {exists: yes please}}\n", []string{"views[v].where.status.exists", "true or false"}},
		{"in not a list", "    where: {status: {in: paid}}\n", []string{"views[v].where.status.in", "list"}},
		{"empty in", "    where: {status: {in: []}}\n", []string{"views[v].where.status.in", "empty"}},
		{"ordered boolean", "    where: {flag: {gt: true}}\n", []string{"views[v].where.flag.gt", "booleans"}},
		{"huge exponent", "    where: {amount: {gt: 1.5E+200}}\n", []string{"views[v].where.amount.gt", "1.5E+200"}},
		{"no operator", "    where: {amount: {}}\n", []string{"views[v].where.amount", "no operator"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clearEnv(t)
			cfg, err := config.Load(writeYAML(t, head+c.yaml))
			if err == nil {
				t.Fatalf("Load succeeded (%+v), want an error", cfg.Views[0])
			}
			checkConfigError(t, err, c.want)
		})
	}
}

func TestParseDuration(t *testing.T) {
	cases := map[string]time.Duration{
		"1m": time.Minute, "1h": time.Hour, "1d": 24 * time.Hour, "30d": 30 * 24 * time.Hour,
		"1d12h": 36 * time.Hour, "90s": 90 * time.Second,
	}
	for in, want := range cases {
		if got, err := config.ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "d", "1w", "1dd", "-1x"} {
		if got, err := config.ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) = %v, want an error", bad, got)
		}
	}
}
