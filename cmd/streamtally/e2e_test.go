package main

import (
	"context"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
)

// TestScenarioCountersEqualFullScan runs the daemon while thousands of
// random inserts, platform moves, amount changes and deletes land, then
// checks every view against a full scan, the published deltas against the
// hashes, and the versions for gaps.
func TestScenarioCountersEqualFullScan(t *testing.T) {
	e := newEnv(t)
	e.createTable()
	sub := e.subscribe()
	d := e.start("w1")
	counts := e.load(4000, 4, 0, 1)()
	t.Logf("load: %s", counts)
	e.waitExact(60 * time.Second)
	e.checkDeltas(sub)

	rejected := logLines(d.logText(), "record contributes nothing")
	if counts.Bad.Load() > 0 && len(rejected) == 0 {
		t.Fatalf("%d bad records written, none logged", counts.Bad.Load())
	}
	for _, l := range rejected {
		if l["key"] == nil || l["reason"] == nil || l["shard"] == nil {
			t.Fatalf("rejection log line lacks key, reason or shard: %v", l)
		}
	}
	if code, took := d.stop(); code != 0 {
		t.Fatalf("exit code %d after SIGTERM (%s)", code, took)
	}
}

// TestCrashRestartStaysExact SIGKILLs the daemon several times while writes
// land; batches applied but not checkpointed are read again on restart and
// must change nothing.
func TestCrashRestartStaysExact(t *testing.T) {
	e := newEnv(t)
	e.createTable()
	sub := e.subscribe()
	wait := e.load(4000, 4, 800, 2)
	r := rand.New(rand.NewPCG(3, 4))
	d := e.start("w1")
	kills := 0
	for i := 0; i < 5; i++ {
		time.Sleep(time.Duration(300+r.IntN(700)) * time.Millisecond)
		d.kill()
		kills++
		d = e.start("w1") // same worker id: it takes its own lease back at once
	}
	counts := wait()
	t.Logf("load: %s; %d SIGKILLs", counts, kills)
	e.waitExact(60 * time.Second)
	e.checkDeltas(sub)
	replays := logLines(d.logText(), "lease taken")
	if len(replays) == 0 {
		t.Fatal("the last daemon never took the lease")
	}
}

// TestTwoDaemonsTakeOverWhenHolderDies runs two daemons on one stream; the
// one holding the lease is killed and the other must take the shard when
// the lease expires, with counters exact.
func TestTwoDaemonsTakeOverWhenHolderDies(t *testing.T) {
	e := newEnv(t)
	e.createTable()
	sub := e.subscribe()
	wait := e.load(3000, 4, 600, 5)
	daemons := map[string]*daemon{"w1": e.start("w1"), "w2": e.start("w2")}
	var shard, holder string
	waitFor(t, 30*time.Second, "a lease holder", func() bool {
		for s, o := range e.leaseOwners() {
			if o != "" {
				shard, holder = s, o
				return true
			}
		}
		return false
	})
	time.Sleep(time.Second)
	daemons[holder].kill()
	survivor := "w1"
	if holder == "w1" {
		survivor = "w2"
	}
	t.Logf("killed lease holder %s of %s; waiting for %s", holder, shard, survivor)
	waitFor(t, 30*time.Second, "the survivor to take the lease", func() bool {
		return e.leaseOwners()[shard] == survivor
	})
	counts := wait()
	t.Logf("load: %s", counts)
	e.waitExact(60 * time.Second)
	e.checkDeltas(sub)
	taken := logLines(daemons[survivor].logText(), "lease taken")
	if len(taken) == 0 || taken[len(taken)-1]["previous_owner"] != holder {
		t.Fatalf("survivor's lease-taken lines do not name %s as previous owner: %v", holder, taken)
	}
}

// TestSIGTERMFinishesBatchAndReleasesLease stops the daemon under load:
// it must exit 0 well within 30 s and leave the lease free, so a new
// worker starts at once rather than after the lease expires.
func TestSIGTERMFinishesBatchAndReleasesLease(t *testing.T) {
	e := newEnv(t)
	e.createTable()
	sub := e.subscribe()
	wait := e.load(3000, 4, 800, 6)
	d := e.start("w1")
	waitFor(t, 30*time.Second, "the lease", func() bool {
		for _, o := range e.leaseOwners() {
			if o == "w1" {
				return true
			}
		}
		return false
	})
	time.Sleep(1500 * time.Millisecond)
	code, took := d.stop()
	if code != 0 {
		t.Fatalf("exit code %d after SIGTERM", code)
	}
	if took > 30*time.Second {
		t.Fatalf("exit took %s, the stop timeout is 30 s", took)
	}
	for s, o := range e.leaseOwners() {
		if o != "" {
			t.Fatalf("shard %s still owned by %q after a clean stop", s, o)
		}
	}
	t.Logf("exited 0 in %s with its lease released", took.Round(time.Millisecond))
	d2 := e.start("w2")
	wait()
	e.waitExact(60 * time.Second)
	e.checkDeltas(sub)
	if code, _ := d2.stop(); code != 0 {
		t.Fatalf("second daemon exit code %d", code)
	}
}

// TestRedisOutageWaitsAndLosesNothing cuts the daemon off from Redis in
// the middle of the load; the shard must wait, checkpoint nothing it has
// not applied, and catch up exactly once Redis is back.
func TestRedisOutageWaitsAndLosesNothing(t *testing.T) {
	e := newEnv(t)
	e.createTable()
	sub := e.subscribe()
	p := newProxy(t, e.redisAddr)
	d := e.startWith("w1", e.config("w1", p.addr()))
	wait := e.load(3000, 4, 800, 7)
	time.Sleep(1500 * time.Millisecond)
	p.setDown(true)
	time.Sleep(3 * time.Second)
	p.setDown(false)
	counts := wait()
	t.Logf("load: %s", counts)
	e.waitExact(60 * time.Second)
	e.checkDeltas(sub)
	if len(logLines(d.logText(), "applying batch failed")) == 0 {
		t.Fatal("no failed apply was logged: the outage did not hit the daemon")
	}
}

// TestBadConfigExitsTwoWithOneLine checks the CLI's answer to configuration
// mistakes: exit code 2 and one line naming the key.
func TestBadConfigExitsTwoWithOneLine(t *testing.T) {
	good := `
source: {table: T, endpoint: "http://127.0.0.1:1"}
views: [{name: v, group_by: [p], measures: {n: count}}]
`
	cases := []struct {
		name, yaml, want string
	}{
		{"unknown key", good + "\nbogus: 1\n", "bogus"},
		{"unknown nested key", strings.Replace(good, "table: T", "table: T, tabel: U", 1), "tabel"},
		{"wrong type", good + "\nredis: {db: many}\n", "redis.db"},
		{"bad duration", strings.Replace(good, "table: T", "table: T, poll_interval: soon", 1), "poll_interval"},
		{"no table", `views: [{name: v, group_by: [p], measures: {n: count}}]`, "source.table"},
		{"bad start", strings.Replace(good, "table: T", "table: T, start: middle", 1), "source.start"},
		{"duplicate view", good + "\n" + `  - {name: v, group_by: [q], measures: {n: count}}`, "duplicate"},
		{"empty group_by", strings.Replace(good, "group_by: [p]", "group_by: []", 1), "group_by"},
		{"unknown function", strings.Replace(good, "n: count", "n: avg(x)", 1), "avg(x)"},
		{"no views", "source: {table: T}\n", "views"},
		{"bad yaml", "source: [\n", "yaml"},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".yaml")
			if err := os.WriteFile(p, []byte(c.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			out, code := runBinary(t, "run", "--config", p)
			if code != 2 {
				t.Fatalf("exit code %d, want 2; output:\n%s", code, out)
			}
			if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 1 {
				t.Fatalf("want one line, got %d:\n%s", len(lines), out)
			}
			if !strings.Contains(out, c.want) {
				t.Fatalf("output does not name %q:\n%s", c.want, out)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		out, code := runBinary(t, "run", "--config", filepath.Join(dir, "nope.yaml"))
		if code != 2 || !strings.Contains(out, "nope.yaml") {
			t.Fatalf("exit %d, output %q", code, out)
		}
	})
}

// TestTableWithoutProperStreamSaysHowToFix covers tables the daemon cannot
// read: no stream, or a stream without old images.
func TestTableWithoutProperStreamSaysHowToFix(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		name string
		spec *ddbtypes.StreamSpecification
		want string
	}{
		{"no stream", nil, "StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES"},
		{"keys only", &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: ddbtypes.StreamViewTypeKeysOnly}, "KEYS_ONLY"},
		{"new image only", &ddbtypes.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: ddbtypes.StreamViewTypeNewImage}, "NEW_AND_OLD_IMAGES"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e.table = e.table[:min(len(e.table), 200)] + string(rune('a'+i))
			_, err := e.ddb.CreateTable(context.Background(), &dynamodb.CreateTableInput{
				TableName:            aws.String(e.table),
				AttributeDefinitions: []ddbtypes.AttributeDefinition{{AttributeName: aws.String("pk"), AttributeType: ddbtypes.ScalarAttributeTypeS}},
				KeySchema:            []ddbtypes.KeySchemaElement{{AttributeName: aws.String("pk"), KeyType: ddbtypes.KeyTypeHash}},
				BillingMode:          ddbtypes.BillingModePayPerRequest,
				StreamSpecification:  c.spec,
			})
			if err != nil {
				t.Fatal(err)
			}
			out, code := runBinary(t, "run", "--config", e.config("w", ""))
			if code != 2 || !strings.Contains(out, c.want) || strings.Count(strings.TrimSpace(out), "\n") != 0 {
				t.Fatalf("exit %d, want 2 and one line with %q; output:\n%s", code, c.want, out)
			}
		})
	}
}

// TestSnapshotPrintsVersionAndMeasures checks the snapshot command against
// the running daemon's result.
func TestSnapshotPrintsVersionAndMeasures(t *testing.T) {
	e := newEnv(t)
	e.createTable()
	d := e.start("w1")
	e.load(300, 2, 0, 9)()
	e.waitExact(60 * time.Second)
	out, code := runBinary(t, "snapshot", "--config", e.config("w1", ""), "--view", "by_platform")
	if code != 0 {
		t.Fatalf("snapshot exit %d: %s", code, out)
	}
	for _, want := range []string{`"view": "by_platform"`, `"version":`, `"donations":`, `"amount":`} {
		if !strings.Contains(out, want) {
			t.Fatalf("snapshot lacks %s:\n%s", want, out)
		}
	}
	if _, code := runBinary(t, "snapshot", "--config", e.config("w1", ""), "--view", "nope"); code != 2 {
		t.Fatalf("unknown view: exit %d, want 2", code)
	}
	d.stop()
}

func runBinary(t *testing.T, args ...string) (string, int) {
	t.Helper()
	cmd := exec.Command(binary, args...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			t.Fatal(err)
		}
	}
	return string(out), cmd.ProcessState.ExitCode()
}

// TestUnreachableEndpointsExitTwo: an endpoint that answers nothing, a table
// that is not there or a Redis that refuses the credentials is a
// configuration to fix, reported in one line naming the setting.
func TestUnreachableEndpointsExitTwo(t *testing.T) {
	e := newEnv(t)
	e.createTable()
	closed := closedAddr(t)
	cases := []struct {
		name         string
		from, to     string // replaced in the working configuration
		want1, want2 string // the line names both
	}{
		{"DynamoDB endpoint", "endpoint: " + e.endpoint + "\n", "endpoint: http://" + closed + "\n", "source.table", "connection refused"},
		{"missing table", "table: " + e.table + "\n", "table: Donations_missing\n", "source.table Donations_missing", "ResourceNotFound"},
		{"lease table endpoint", "checkpoint:\n", "checkpoint:\n  endpoint: http://" + closed + "\n", "checkpoint.table", "connection refused"},
		{"Redis address", "addr: " + e.redisAddr + "\n", "addr: " + closed + "\n", "redis", "connection refused"},
		{"Redis credentials", "redis:\n", "redis:\n  username: nobody\n  password: not-the-password\n", "redis", "WRONGPASS"},
	}
	good, err := os.ReadFile(e.config("w", ""))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel() // each waits out retries
			if !strings.Contains(string(good), c.from) {
				t.Fatalf("configuration has no %q:\n%s", c.from, good)
			}
			p := filepath.Join(t.TempDir(), "bad.yaml")
			// At level info, the one line is the whole output.
			bad := strings.Replace(strings.Replace(string(good), c.from, c.to, 1), "level: debug", "level: info", 1)
			if err := os.WriteFile(p, []byte(bad), 0o644); err != nil {
				t.Fatal(err)
			}
			out, code := runBinary(t, "run", "--config", p)
			if code != 2 || strings.Count(strings.TrimSpace(out), "\n") != 0 ||
				!strings.Contains(out, c.want1) || !strings.Contains(out, c.want2) {
				t.Fatalf("exit %d, want 2 and one line naming %q and %q; output:\n%s", code, c.want1, c.want2, out)
			}
			if strings.Contains(out, "not-the-password") {
				t.Fatalf("the password is in the output:\n%s", out)
			}
		})
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := ln.Addr().String()
	ln.Close()
	return a
}
