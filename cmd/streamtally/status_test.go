package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/streamtally/streamtally/internal/streamstest"
	"github.com/streamtally/streamtally/lease"
)

// statusRow is one row of the status table, by column name.
type statusRow map[string]string

// parseStatus splits the status table into rows and returns the live
// workers line.
func parseStatus(t *testing.T, out string) ([]statusRow, string) {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	cols := strings.Fields(lines[0])
	if strings.Join(cols, " ") != "SHARD PARENT STATE OWNER CHECKPOINT LAG LEASE" {
		t.Fatalf("status header %q:\n%s", lines[0], out)
	}
	var rows []statusRow
	for _, l := range lines[1 : len(lines)-1] {
		f := strings.Fields(l)
		if len(f) < len(cols) {
			t.Fatalf("short status row %q:\n%s", l, out)
		}
		r := statusRow{}
		for i, c := range cols[:len(cols)-1] {
			r[c] = f[i]
		}
		r["LEASE"] = strings.Join(f[len(cols)-1:], " ") // "expired 3m ago"
		rows = append(rows, r)
	}
	return rows, lines[len(lines)-1]
}

// quietDDB is e.ddb without response checksum validation, whose failure
// on DynamoDB Local's error responses logs a warning per missing table.
func quietDDB(e *env) *dynamodb.Client {
	return dynamodb.New(e.ddb.Options(), func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true })
}

type statusDoc struct {
	Stream      string   `json:"stream"`
	LeaseTable  string   `json:"lease_table"`
	LiveWorkers []string `json:"live_workers"`
	Shards      []struct {
		Shard            string     `json:"shard"`
		State            string     `json:"state"`
		Owner            string     `json:"owner"`
		Checkpoint       string     `json:"checkpoint"`
		LeaseTimeout     *time.Time `json:"lease_timeout"`
		LeaseRemainingMS *int64     `json:"lease_remaining_ms"`
		LagMS            *int64     `json:"lag_ms"`
		Oldest           *time.Time `json:"oldest_unprocessed"`
	} `json:"shards"`
}

// TestStatusShowsOwnerAndLag runs the status command against a live daemon
// and then a dead one: caught up, the shard is the worker's with lag 0s;
// once the worker is killed and writes go on, the lag is above 0.
func TestStatusShowsOwnerAndLag(t *testing.T) {
	e := newEnv(t)
	e.createTable()
	cfg := e.config("w1", "")

	out, code := runBinary(t, "status", "--config", cfg)
	want := "no lease table " + e.app + ": no streamtally worker has run with checkpoint.app " + e.app
	if code != 1 || !strings.Contains(out, want) {
		t.Fatalf("status before any worker ran: exit %d, want 1 and %q; output:\n%s", code, want, out)
	}
	t.Logf("before any worker ran (exit %d): %s", code, out)
	_, err := quietDDB(e).DescribeTable(context.Background(), &dynamodb.DescribeTableInput{TableName: aws.String(e.app)})
	var missing *ddbtypes.ResourceNotFoundException
	if !errors.As(err, &missing) {
		t.Fatalf("after status, DescribeTable %s: %v, want ResourceNotFoundException: status must not create it", e.app, err)
	}

	d := e.start("w1")
	e.load(300, 2, 0, 31)()
	e.waitExact(60 * time.Second)
	// Counters are exact before the last checkpoint is written.
	var rows []statusRow
	var workers string
	waitFor(t, 15*time.Second, "status to show the shard caught up", func() bool {
		out, code = runBinary(t, "status", "--config", cfg)
		if code != 0 {
			t.Fatalf("status: exit %d:\n%s", code, out)
		}
		rows, workers = parseStatus(t, out)
		return len(rows) == 1 && rows[0]["LAG"] == "0s"
	})
	t.Logf("caught up:\n%s", out)
	r := rows[0]
	if r["OWNER"] != "w1" || r["STATE"] != "open" || r["CHECKPOINT"] == "-" || len(r["CHECKPOINT"]) > 12 || r["LEASE"] == "-" || strings.HasPrefix(r["LEASE"], "expired") {
		t.Fatalf("caught-up row %v, want open, owned by w1, a short checkpoint and a running lease", r)
	}
	if workers != "live workers (1): w1" {
		t.Fatalf("workers line %q", workers)
	}

	d.kill()
	e.load(40, 1, 0, 32)()
	out, code = runBinary(t, "status", "--config", cfg)
	if code != 0 {
		t.Fatalf("status after the kill: exit %d:\n%s", code, out)
	}
	t.Logf("worker killed, writes landed:\n%s", out)
	rows, _ = parseStatus(t, out)
	if len(rows) != 1 || rows[0]["OWNER"] != "w1" || rows[0]["CHECKPOINT"] != r["CHECKPOINT"] {
		t.Fatalf("rows %v, want the shard still w1's at checkpoint %s", rows, r["CHECKPOINT"])
	}
	if lag := rows[0]["LAG"]; lag == "0s" || lag == "-" || lag == "?" {
		t.Fatalf("lag %q with unprocessed records, want above 0s", lag)
	}

	out, code = runBinary(t, "status", "--config", cfg, "--json")
	if code != 0 {
		t.Fatalf("status --json: exit %d:\n%s", code, out)
	}
	t.Logf("status --json:\n%s", out)
	var doc statusDoc
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("status --json: %v:\n%s", err, out)
	}
	if len(doc.Shards) != 1 || doc.LeaseTable != e.app || !strings.Contains(doc.Stream, e.table) {
		t.Fatalf("status --json: %s", out)
	}
	s := doc.Shards[0]
	if s.Owner != "w1" || s.State != "open" || !strings.HasSuffix(s.Checkpoint, r["CHECKPOINT"]) ||
		s.LagMS == nil || *s.LagMS <= 0 || s.Oldest == nil || s.LeaseTimeout == nil || s.LeaseRemainingMS == nil {
		t.Fatalf("status --json shard: %+v\n%s", s, out)
	}
}

// TestStatusTableMarksClosedAndGoneShards renders a stream with open,
// closed and trimmed shards, live and expired leases: the binary reads a
// scripted stream (source.stream_arn on a streamstest server) and a lease
// table on DynamoDB Local.
func TestStatusTableMarksClosedAndGoneShards(t *testing.T) {
	e := newEnv(t)
	srv := streamstest.NewServer(t)
	ctx := context.Background()
	lt := lease.NewTable(quietDDB(e), e.app, e.app, "w1", time.Minute, slog.New(slog.DiscardHandler))
	if err := lt.Init(ctx); err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	put := func(shard, parent, owner, cp string, timeout time.Time) {
		item := map[string]ddbtypes.AttributeValue{"ShardID": &ddbtypes.AttributeValueMemberS{Value: shard}}
		for k, v := range map[string]string{"ParentShardId": parent, "AssignedTo": owner, "Checkpoint": cp, "LeaseTimeout": timeout.UTC().Format(time.RFC3339Nano)} {
			if v != "" {
				item[k] = &ddbtypes.AttributeValueMemberS{Value: v}
			}
		}
		if _, err := e.ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(e.app), Item: item}); err != nil {
			t.Fatal(err)
		}
	}
	rec := func(created time.Time) streamstest.Record {
		return streamstest.Record{NewImage: streamstest.Item("pk", created.String()), ApproximateCreation: created}
	}
	srv.AddShard("shardId-0001", "shardId-0000")
	srv.Append("shardId-0001", rec(now.Add(-time.Hour)))
	srv.CloseShard("shardId-0001")
	put("shardId-0000", "", "", lease.ShardEnd, now.Add(-2*time.Hour))
	put("shardId-0001", "shardId-0000", "", lease.ShardEnd, now.Add(-time.Hour))
	srv.AddShard("shardId-0002", "shardId-0001")
	seq2 := srv.Append("shardId-0002", rec(now.Add(-20*time.Minute)), rec(now.Add(-10*time.Minute)))[0]
	put("shardId-0002", "shardId-0001", "w2", seq2, now.Add(-3*time.Minute))
	srv.AddShard("shardId-0003", "shardId-0001")
	seq3 := srv.Append("shardId-0003", rec(now.Add(-time.Minute)))[0]
	put("shardId-0003", "shardId-0001", "w1", seq3, now.Add(time.Minute))
	if err := lt.Heartbeat(ctx); err != nil {
		t.Fatal(err)
	}

	cfg := filepath.Join(e.dir, "fake.yaml")
	y := fmt.Sprintf("source:\n  stream_arn: %s\n  endpoint: %s\n  region: us-east-1\ncheckpoint:\n  app: %s\n  endpoint: %s\n", srv.StreamARN, srv.URL, e.app, e.endpoint) + viewsYAML
	if err := os.WriteFile(cfg, []byte(y), 0o644); err != nil {
		t.Fatal(err)
	}
	out, code := runBinary(t, "status", "--config", cfg)
	if code != 0 {
		t.Fatalf("status: exit %d:\n%s", code, out)
	}
	t.Logf("status:\n%s", out)
	rows, workers := parseStatus(t, out)
	want := []string{
		`shardId-0000 - gone - SHARD_END - -`,
		`shardId-0001 shardId-0000 closed - SHARD_END - -`,
		`shardId-0002 shardId-0001 open w2 ` + seq2[9:] + ` 10m(\ds)? expired 3m(\ds)? ago`,
		`shardId-0003 shardId-0001 open w1 ` + seq3[9:] + ` 0s (59s|1m)`,
	}
	if len(rows) != len(want) {
		t.Fatalf("%d rows, want %d:\n%s", len(rows), len(want), out)
	}
	for i, r := range rows {
		got := strings.Join([]string{r["SHARD"], r["PARENT"], r["STATE"], r["OWNER"], r["CHECKPOINT"], r["LAG"], r["LEASE"]}, " ")
		if !regexp.MustCompile(`^` + want[i] + `$`).MatchString(got) {
			t.Errorf("row %d: %q, want %q", i, got, want[i])
		}
	}
	if workers != "live workers (1): w1" {
		t.Errorf("workers line %q", workers)
	}
}
