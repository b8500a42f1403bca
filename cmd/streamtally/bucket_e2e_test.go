package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/internal/loadgen"
)

// bucketViewsYAML has a bucketed view with a filter, one bucketed by an
// epoch-ms attribute whose retention drops old items, a filtered view
// without buckets, and one bucketed by stream time.
const bucketViewsYAML = `
views:
  - name: paid_per_hour
    group_by: [platform]
    measures: {donations: count, amount: sum(amount)}
    bucket: {size: 1h, time: paidAt, retention: 30d}
    where: {status: paid, amount: {gte: 10}}
  - name: per_day_epoch
    group_by: [platform]
    measures: {amount: sum(amount)}
    bucket: {size: 1d, time: paidMs, retention: 7d}
  - name: settled_totals
    group_by: [platform]
    measures: {donations: count, amount: sum(amount)}
    where: {status: {in: [paid, settled]}, refund: {exists: false}}
  - name: changes_per_minute
    group_by: [platform]
    measures: {donations: count, amount: sum(amount)}
    bucket: {size: 1m, time: stream, retention: 1d}
`

// TestBucketsAndFiltersEqualFullScan writes donations whose times arrive
// late and out of order, then moves them between buckets, in and out of
// the filters, and deletes some, while the daemon runs; every bucket of
// every view must then equal a full scan, exactly, and the published
// deltas must add up to the buckets.
func TestBucketsAndFiltersEqualFullScan(t *testing.T) {
	e := newEnvWithViews(t, bucketViewsYAML)
	e.createTable()
	sub := e.subscribe()
	d := e.start("w1")
	ctx := context.Background()
	r := rand.New(rand.NewPCG(11, 13))
	now := time.Now().UTC()
	// An hour within the last ten days, to the second: a late arrival for
	// all but the newest.
	paidAt := func() string {
		return now.Add(-time.Duration(r.Int64N(int64(240 * time.Hour)))).Truncate(time.Second).Format("2006-01-02T15:04:05")
	}
	// Epoch ms within five days, or ten to twelve days ago: past the
	// 7-day retention of a 1-day bucket, so never counted.
	paidMs := func() string {
		age := time.Duration(r.Int64N(int64(120 * time.Hour)))
		if r.IntN(4) == 0 {
			age = 240*time.Hour + time.Duration(r.Int64N(int64(48*time.Hour)))
		}
		return strconv.FormatInt(now.Add(-age).UnixMilli(), 10)
	}
	amount := func() string { return fmt.Sprintf("%d.%02d", r.IntN(30), r.IntN(100)) }
	statuses := []string{"paid", "paid", "pending", "settled", "void"}
	type key struct{ email, at string }
	var keys []key
	n := func(s string) ddbtypes.AttributeValue { return &ddbtypes.AttributeValueMemberN{Value: s} }
	s := func(v string) ddbtypes.AttributeValue { return &ddbtypes.AttributeValueMemberS{Value: v} }
	badTimes := 0
	for i := 0; i < 150; i++ {
		k := key{fmt.Sprintf("donor%d@example.org", i), "2019-08-07T07:00:00"}
		item := map[string]ddbtypes.AttributeValue{
			"email": s(k.email), "donatedAt": s(k.at),
			"platform": s(loadgen.Platforms[r.IntN(len(loadgen.Platforms))]),
			"amount":   n(amount()), "status": s(statuses[r.IntN(len(statuses))]),
			"paidAt": s(paidAt()), "paidMs": n(paidMs()),
		}
		switch r.IntN(20) {
		case 0:
			delete(item, "paidAt") // outside the hourly view
		case 1:
			item["paidAt"] = s("soon") // a dead letter of the hourly view
			badTimes++
		case 2, 3:
			item["refund"] = n("1")
		}
		if _, err := e.ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(e.table), Item: item}); err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	ops := map[string]int{}
	for i := 0; i < 600; i++ {
		k := keys[r.IntN(len(keys))]
		dk := map[string]ddbtypes.AttributeValue{"email": s(k.email), "donatedAt": s(k.at)}
		var expr string
		vals := map[string]ddbtypes.AttributeValue{}
		switch op := r.IntN(10); op {
		case 0, 1:
			expr, vals[":v"] = "SET paidAt = :v", s(paidAt())
			ops["time moves"]++
		case 2:
			expr, vals[":v"] = "SET paidMs = :v", n(paidMs())
			ops["epoch time moves"]++
		case 3, 4:
			expr, vals[":v"] = "SET #s = :v", s(statuses[r.IntN(len(statuses))])
			ops["status changes"]++
		case 5, 6:
			expr, vals[":v"] = "SET amount = :v", n(amount())
			ops["amount changes"]++
		case 7:
			if r.IntN(2) == 0 {
				expr = "REMOVE refund"
			} else {
				expr, vals[":v"] = "SET refund = :v", n("1")
			}
			ops["refunds"]++
		case 8:
			expr, vals[":v"], vals[":p"] = "SET paidAt = :v, platform = :p", s(paidAt()), s(loadgen.Platforms[r.IntN(len(loadgen.Platforms))])
			ops["time and platform moves"]++
		default:
			if _, err := e.ddb.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(e.table), Key: dk}); err != nil {
				t.Fatal(err)
			}
			ops["deletes"]++
			// Back later, perhaps: a put of the same key is an insert.
			continue
		}
		in := &dynamodb.UpdateItemInput{TableName: aws.String(e.table), Key: dk, UpdateExpression: aws.String(expr),
			ConditionExpression: aws.String("attribute_exists(email)")}
		if len(vals) > 0 {
			in.ExpressionAttributeValues = vals
		}
		if strings.Contains(expr, "#s") {
			in.ExpressionAttributeNames = map[string]string{"#s": "status"}
		}
		if _, err := e.ddb.UpdateItem(ctx, in); err != nil && !strings.Contains(err.Error(), "ConditionalCheckFailed") {
			t.Fatal(err)
		}
	}
	t.Logf("150 inserts (%d with a bad time), then %v", badTimes, ops)

	e.waitExact(90 * time.Second)
	e.checkDeltas(sub)

	lines := logLines(d.logText(), "record contributes nothing")
	kinds := map[string]int{}
	for _, l := range lines {
		kinds[fmt.Sprint(l["view"], "/", l["kind"])]++
	}
	if kinds["paid_per_hour/bad_time"] == 0 || kinds["paid_per_hour/missing_time"] == 0 {
		t.Errorf("rejections by view and kind %v: want bad_time and missing_time for paid_per_hour", kinds)
	}
	for k := range kinds {
		if strings.HasSuffix(k, "/"+aggregate.Filtered) {
			t.Errorf("items outside a filter were reported: %v", kinds)
		}
	}

	// The CLI prints the same series as the store reads.
	v := e.view("paid_per_hour")
	from, to := time.Unix(v.BucketOf(now), 0).Add(-100*time.Hour), time.Unix(v.BucketOf(now), 0).Add(time.Hour)
	out, code := runBinary(t, "snapshot", "--config", e.config("w1", ""), "--view", v.Name,
		"--from", from.Format(time.RFC3339), "--to", to.Format(time.RFC3339))
	if code != 0 {
		t.Fatalf("snapshot of a series: exit %d: %s", code, out)
	}
	want, err := e.store.Series(ctx, v, from, to)
	if err != nil {
		t.Fatal(err)
	}
	wantJSON, _ := json.MarshalIndent(want, "", "  ")
	if strings.TrimSpace(out) != string(wantJSON) {
		t.Errorf("snapshot printed\n%s\nwant\n%s", out, wantJSON)
	}
	if len(want.Buckets) < 10 {
		t.Errorf("the series holds %d buckets; the test covers too little", len(want.Buckets))
	}
	// By default: the 24 buckets up to the current one.
	out, code = runBinary(t, "snapshot", "--config", e.config("w1", ""), "--view", v.Name)
	var def struct{ From, To string }
	if err := json.Unmarshal([]byte(out), &def); code != 0 || err != nil {
		t.Fatalf("default series: exit %d, %v: %s", code, err, out)
	}
	if f, _ := time.Parse(time.RFC3339, def.From); time.Unix(v.BucketOf(now), 0).Sub(f) != 23*time.Hour {
		t.Errorf("default series from %s to %s, want the 24 hours up to the current one", def.From, def.To)
	}
	for _, args := range [][]string{
		{"--view", v.Name, "--from", "yesterday"},
		{"--view", v.Name, "--from", to.Format(time.RFC3339), "--to", from.Format(time.RFC3339)},
		{"--view", "settled_totals", "--from", from.Format(time.RFC3339)},
	} {
		if out, code := runBinary(t, append([]string{"snapshot", "--config", e.config("w1", "")}, args...)...); code != 2 || strings.Count(strings.TrimSpace(out), "\n") != 0 {
			t.Errorf("snapshot %v: exit %d, %q; want 2 and one line", args, code, out)
		}
	}
	if code, took := d.stop(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM (%s)", code, took)
	}
}

func (e *env) view(name string) *aggregate.View {
	for _, v := range e.views {
		if v.Name == name {
			return v
		}
	}
	e.t.Fatalf("no view %s", name)
	return nil
}

// seriesMeasures reads every live bucket of v as measures named
// "<bucket> <measure>".
func (e *env) seriesMeasures(v *aggregate.View) map[string]map[string]string {
	e.t.Helper()
	s, err := e.store.Series(context.Background(), v, time.Now().AddDate(-1, 0, 0), time.Now().AddDate(0, 0, 1))
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]map[string]string{}
	for b, ms := range s.Buckets {
		for m, groups := range ms {
			out[b+" "+m] = groups
		}
	}
	return out
}
