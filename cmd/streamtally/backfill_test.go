package main

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/internal/loadgen"
	"github.com/streamtally/streamtally/internal/testenv"
	"github.com/streamtally/streamtally/publish"
)

// newRecountEnv is an env on a DynamoDB Local and a redis-server of its
// own: the tests here load tens of thousands of items, which would slow the
// shared DynamoDB Local for every other test, and flush Redis. The daemon
// reaches DynamoDB directly, not through the IAM check's recording proxy:
// backfill, rebuild and verify are operator commands, not the task's.
func newRecountEnv(t *testing.T) *env {
	t.Helper()
	return newRecountEnvWithViews(t, viewsYAML)
}

// recountBucketView is a bucketed view with a filter, by the items' own
// time (the sort key: the preloaded items fall into 60 minutes of 2018,
// loadgen's into minutes of 2019), kept for a century so that no bucket
// expires; churned amounts move items in and out of its filter.
const recountBucketView = `  - name: big_per_minute
    group_by: [platform]
    measures: {donations: count, amount: sum(amount)}
    bucket: {size: 1m, time: donatedAt, retention: 36500d}
    where: {amount: {gte: 100}}
`

func newRecountEnvWithViews(t *testing.T, views string) *env {
	t.Helper()
	name := strings.NewReplacer("/", "_").Replace(t.Name())
	srv := testenv.NewRedis(t)
	e := &env{
		t: t, dir: t.TempDir(),
		endpoint:  testenv.NewDynamoDB(t),
		redisAddr: srv.Addr(),
		table:     "Donations_" + name,
		app:       "app_" + name,
		prefix:    "tally",
		viewsYAML: views,
	}
	// The churn's conditional writes fail now and then, and DynamoDB
	// Local's error responses carry a CRC32 the SDK would warn about.
	e.ddb = dynamodb.New(ddbClient(t, e.endpoint).Options(), func(o *dynamodb.Options) { o.DisableValidateResponseChecksum = true })
	e.rdb = redis.NewClient(&redis.Options{Addr: e.redisAddr})
	t.Cleanup(func() { e.rdb.Close() })
	cfg, err := config.Load(e.config("check", ""))
	if err != nil {
		t.Fatal(err)
	}
	e.views = aggregate.NewViews(cfg.Specs())
	e.store = publish.NewRedis(e.rdb, e.prefix, e.views)
	return e
}

// createTableWithoutStream creates the Donations table as it was before
// anyone thought of a stream.
func (e *env) createTableWithoutStream() {
	e.t.Helper()
	ctx := context.Background()
	_, err := e.ddb.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName: aws.String(e.table),
		AttributeDefinitions: []ddbtypes.AttributeDefinition{
			{AttributeName: aws.String("email"), AttributeType: ddbtypes.ScalarAttributeTypeS},
			{AttributeName: aws.String("donatedAt"), AttributeType: ddbtypes.ScalarAttributeTypeS},
		},
		KeySchema: []ddbtypes.KeySchemaElement{
			{AttributeName: aws.String("email"), KeyType: ddbtypes.KeyTypeHash},
			{AttributeName: aws.String("donatedAt"), KeyType: ddbtypes.KeyTypeRange},
		},
		BillingMode: ddbtypes.BillingModePayPerRequest,
	})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := dynamodb.NewTableExistsWaiter(e.ddb).Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(e.table)}, time.Minute); err != nil {
		e.t.Fatal(err)
	}
}

// enableStream turns on a NEW_AND_OLD_IMAGES stream on the existing table:
// what a team adopting streamtally does.
func (e *env) enableStream() {
	e.t.Helper()
	_, err := e.ddb.UpdateTable(context.Background(), &dynamodb.UpdateTableInput{
		TableName: aws.String(e.table),
		StreamSpecification: &ddbtypes.StreamSpecification{
			StreamEnabled: aws.Bool(true), StreamViewType: ddbtypes.StreamViewTypeNewAndOldImages,
		},
	})
	if err != nil {
		e.t.Fatalf("enable the stream: %v", err)
	}
}

func oldItem(i int, rnd *rand.Rand) map[string]ddbtypes.AttributeValue {
	email, at := oldKey(i)
	return map[string]ddbtypes.AttributeValue{
		"email":     &ddbtypes.AttributeValueMemberS{Value: email},
		"donatedAt": &ddbtypes.AttributeValueMemberS{Value: at},
		"platform":  &ddbtypes.AttributeValueMemberS{Value: loadgen.Platforms[rnd.IntN(len(loadgen.Platforms))]},
		"amount":    &ddbtypes.AttributeValueMemberN{Value: fmt.Sprintf("%d.%02d", rnd.IntN(1000), rnd.IntN(100))},
	}
}

func oldKey(i int) (string, string) {
	return fmt.Sprintf("old%d@example.org", i), fmt.Sprintf("2018-01-01T00:%02d:%02d", (i/60)%60, i%60)
}

// preload writes n items with BatchWriteItem from several goroutines.
func (e *env) preload(n int) {
	e.t.Helper()
	ctx := context.Background()
	const writers = 8
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 7))
			for start := w * 25; start < n; start += writers * 25 {
				var reqs []ddbtypes.WriteRequest
				for i := start; i < min(start+25, n); i++ {
					reqs = append(reqs, ddbtypes.WriteRequest{PutRequest: &ddbtypes.PutRequest{Item: oldItem(i, rnd)}})
				}
				in := map[string][]ddbtypes.WriteRequest{e.table: reqs}
				for len(in) > 0 {
					out, err := e.ddb.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: in})
					if err != nil {
						errs <- err
						return
					}
					in = out.UnprocessedItems
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		e.t.Fatalf("preload: %v", err)
	}
}

// churn changes the preloaded items at random until stop is called: moves
// between groups, amount changes, deletes and inserts again. Alongside,
// loadgen inserts and changes new items, some of them bad.
func (e *env) churn(n int, seed uint64) (stop func() int64) {
	ctx, cancel := context.WithCancel(context.Background())
	var ops atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < 3; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(seed, uint64(w)))
			for ctx.Err() == nil {
				i := rnd.IntN(n)
				email, at := oldKey(i)
				key := map[string]ddbtypes.AttributeValue{
					"email": &ddbtypes.AttributeValueMemberS{Value: email}, "donatedAt": &ddbtypes.AttributeValueMemberS{Value: at},
				}
				var err error
				switch p := rnd.IntN(10); {
				case p < 4:
					_, err = e.ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(e.table), Key: key,
						UpdateExpression:          aws.String("SET platform = :p"),
						ConditionExpression:       aws.String("attribute_exists(email)"),
						ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":p": &ddbtypes.AttributeValueMemberS{Value: loadgen.Platforms[rnd.IntN(len(loadgen.Platforms))]}}})
				case p < 7:
					_, err = e.ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{TableName: aws.String(e.table), Key: key,
						UpdateExpression:          aws.String("SET amount = :a"),
						ConditionExpression:       aws.String("attribute_exists(email)"),
						ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":a": &ddbtypes.AttributeValueMemberN{Value: fmt.Sprintf("%d.%02d", rnd.IntN(100000), rnd.IntN(100))}}})
				case p < 9:
					_, err = e.ddb.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(e.table), Key: key})
				default:
					_, err = e.ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(e.table), Item: oldItem(i, rnd)})
				}
				var failed *ddbtypes.ConditionalCheckFailedException
				if err != nil && ctx.Err() == nil && !errors.As(err, &failed) {
					e.t.Errorf("churn: %v", err)
					return
				}
				ops.Add(1)
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, err := loadgen.Run(ctx, e.ddb, e.table, loadgen.Options{Ops: 1 << 30, Writers: 2, Rate: 100, Seed: seed, BadRate: 0.02, Huge: true})
		if err != nil && ctx.Err() == nil {
			e.t.Errorf("load: %v", err)
		}
	}()
	return func() int64 {
		cancel()
		wg.Wait()
		return ops.Load()
	}
}

// streamtally runs a command of the binary with the env's configuration
// and returns its exit code, stdout and stderr.
func (e *env) streamtally(args ...string) (int, string, string) {
	e.t.Helper()
	return e.streamtallyWith(e.config("tool", ""), args...)
}

func (e *env) streamtallyWith(cfg string, args ...string) (int, string, string) {
	e.t.Helper()
	cmd := exec.Command(binary, append(args[:1:1], append([]string{"--config", cfg}, args[1:]...)...)...)
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err := cmd.Run()
	code := 0
	if x, ok := err.(*exec.ExitError); ok {
		code = x.ExitCode()
	} else if err != nil {
		e.t.Fatal(err)
	}
	return code, out.String(), errOut.String()
}

func (e *env) mustRun(args ...string) string {
	e.t.Helper()
	return e.mustRunWith(e.config("tool", ""), args...)
}

func (e *env) mustRunWith(cfg string, args ...string) string {
	e.t.Helper()
	code, out, errOut := e.streamtallyWith(cfg, args...)
	if code != 0 {
		e.t.Fatalf("streamtally %s: exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), code, out, tail(errOut, 3000))
	}
	e.t.Logf("streamtally %s:\n%s", strings.Join(args, " "), out)
	return out
}

// The adoption path: a table with 50 000 items the stream never saw, the
// stream enabled, the daemon started, writes going on all along (to old
// items and new ones), then backfill. Afterwards every view equals a full
// scan, and verify agrees while writes go on.
func TestBackfillSeedsExistingItemsWhileWritesContinue(t *testing.T) {
	const n = 50_000
	e := newRecountEnv(t)
	e.createTableWithoutStream()
	start := time.Now()
	e.preload(n)
	t.Logf("preloaded %d items in %s", n, time.Since(start).Round(time.Millisecond))
	e.enableStream()
	d := e.start("w1")
	stop := e.churn(n, 1)
	time.Sleep(2 * time.Second) // some records before the cut, for the daemon to apply

	out := e.mustRun("backfill", "--segments", "4", "--page-size", "1000")
	for _, v := range e.views {
		if !strings.Contains(out, "view "+v.Name+": rebuilt from the table") {
			t.Errorf("backfill did not report view %s", v.Name)
		}
	}
	e.mustRun("verify")
	ops := stop()
	t.Logf("%d changes to old items while the backfill ran", ops)
	e.waitExact(60 * time.Second)
	e.mustRun("verify")
	if code, _ := d.stop(); code != 0 {
		t.Errorf("daemon exit %d", code)
	}
}

// verify is exact while the table takes writes, and names every group
// whose numbers differ after they are tampered with; so for a bucketed view
// with a filter, which backfill and rebuild count exactly under writes.
func TestVerifyFindsInjectedDriftAndPassesOnCleanData(t *testing.T) {
	const n = 3000
	e := newRecountEnvWithViews(t, viewsYAML+recountBucketView)
	e.createTableWithoutStream()
	e.preload(n)
	e.enableStream()
	e.start("w1")
	stop := e.churn(n, 2)
	e.mustRun("backfill")
	if out := e.mustRun("verify", "--segments", "2", "--rate", "2000"); !strings.Contains(out, "view big_per_minute: equals the table") {
		t.Errorf("verify does not vouch for the bucketed view:\n%s", out)
	}
	stop()
	e.waitExact(60 * time.Second)

	ctx := context.Background()
	k := publish.KeysFor(e.prefix, "by_platform")
	if err := e.rdb.HIncrBy(ctx, k.Measure("donations"), "Web", 1).Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.rdb.HSet(ctx, k.Measure("amount"), "Phone", "1.01").Err(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"donations", "amount", "_items"} {
		if err := e.rdb.HDel(ctx, k.Measure(m), "Mail").Err(); err != nil {
			t.Fatal(err)
		}
	}
	// In the bucketed view: a value changed in one bucket, and a bucket the
	// table does not have.
	bk := publish.KeysFor(e.prefix, "big_per_minute")
	const tampered, invented = "2018-01-01T00:07:00Z", "2018-01-02T00:00:00Z"
	groups, err := e.rdb.HKeys(ctx, bk.BucketMeasure(tampered, "amount")).Result()
	if err != nil || len(groups) == 0 {
		t.Fatalf("bucket %s of big_per_minute holds %v (%v)", tampered, groups, err)
	}
	if err := e.rdb.HSet(ctx, bk.BucketMeasure(tampered, "amount"), groups[0], "0.5").Err(); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"donations", "amount", "_items"} {
		if err := e.rdb.HSet(ctx, bk.BucketMeasure(invented, m), "Web", "1").Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.rdb.ZAdd(ctx, bk.Buckets(), redis.Z{Score: 1514851200, Member: invented}).Err(); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := e.streamtally("verify")
	if code != 1 {
		t.Fatalf("verify after tampering: exit %d, want 1\n%s\n%s", code, out, errOut)
	}
	for _, want := range []string{
		`view by_platform measure donations group "Web"`,
		`view by_platform measure amount group "Phone"`,
		`view by_platform measure amount group "Mail": table `,
		`view by_platform measure donations group "Mail": table `,
		fmt.Sprintf(`view big_per_minute bucket %s measure amount group %q: table `, tampered, groups[0]),
		fmt.Sprintf(`view big_per_minute bucket %s measure donations group "Web": table (none), redis 1`, invented),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("verify output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "view amount_only measure") {
		t.Errorf("verify reports drift in the untouched view:\n%s", out)
	}
	if !strings.Contains(out, "view amount_only: equals the table") {
		t.Errorf("verify does not say the untouched view is clean:\n%s", out)
	}

	if strings.Contains(out, "bucket "+tampered+" measure donations") {
		t.Errorf("verify reports drift in a measure left alone:\n%s", out)
	}
	// The full-scan check the tests rely on sees the same buckets.
	diffs, err := loadgen.Check(ctx, e.ddb, e.table, e.store, e.views)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, d := range diffs {
		if d.View == "big_per_minute" {
			seen[d.Measure+" "+d.Group] = true
		}
	}
	if !seen[tampered+" amount "+groups[0]] || !seen[invented+" donations Web"] {
		t.Errorf("loadgen.Check misses the tampered buckets: %v", diffs)
	}

	// rebuild repairs it while writes go on, and tells subscribers.
	sub := e.subscribe()
	stop = e.churn(n, 3)
	e.mustRun("rebuild", "--view", "by_platform")
	e.mustRun("verify", "--view", "by_platform")
	e.mustRun("rebuild", "--view", "big_per_minute")
	if out := e.mustRun("verify", "--view", "big_per_minute"); !strings.Contains(out, "view big_per_minute: equals the table") {
		t.Errorf("verify does not vouch for the rebuilt bucketed view:\n%s", out)
	}
	stop()
	if n, _ := e.rdb.Exists(ctx, bk.BucketItems(invented), bk.Runs()).Result(); n != 0 {
		t.Errorf("%d keys left of the invented bucket or the fresh runs after the rebuild", n)
	}
	e.waitExact(60 * time.Second)
	waitFor(t, 10*time.Second, "a reset message on by_platform", func() bool {
		sub.mu.Lock()
		defer sub.mu.Unlock()
		for _, m := range sub.msgs["by_platform"] {
			if m.Reset && m.Version > 0 {
				return true
			}
		}
		return false
	})
}

// A view whose Redis data is gone (FLUSHALL) is marked lost by the
// daemon; backfill makes it whole while writes go on, and the daemon
// applies it again from the swap's fences.
func TestBackfillMakesALostViewWholeAndTheDaemonResumes(t *testing.T) {
	const n = 3000
	e := newRecountEnv(t)
	e.createTableWithoutStream()
	e.preload(n)
	e.enableStream()
	d := e.start("w1")
	stop := e.churn(n, 4)
	e.mustRun("backfill")
	if err := e.rdb.FlushAll(context.Background()).Err(); err != nil {
		t.Fatal(err)
	}
	for _, v := range e.views {
		k := publish.KeysFor(e.prefix, v.Name)
		waitFor(t, 60*time.Second, "view "+v.Name+" marked lost", func() bool {
			ok, err := e.rdb.HExists(context.Background(), k.Meta(), "lost").Result()
			return err == nil && ok
		})
	}
	if code, out, _ := e.streamtally("verify"); code != 1 || !strings.Contains(out, "lost") {
		t.Errorf("verify of lost views: exit %d, output %q; want 1 naming them lost", code, out)
	}
	e.mustRun("backfill")
	stop()
	e.waitExact(60 * time.Second)
	e.mustRun("verify")
	if len(logLines(d.logText(), "view is whole again")) == 0 {
		t.Errorf("the daemon did not log that the views are whole again")
	}
}

// Bad flags of the recount commands are one line and exit 2, before
// anything is read.
func TestRecountCommandsRejectBadFlags(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "c.yaml")
	if err := os.WriteFile(cfg, []byte("source:\n  table: T\n"+viewsYAML), 0o644); err != nil {
		t.Fatal(err)
	}
	// A filtered view is recounted like any other; one bucketed by stream
	// time cannot be.
	streamCfg := filepath.Join(t.TempDir(), "s.yaml")
	if err := os.WriteFile(streamCfg, []byte("source:\n  table: T\n"+viewsYAML+recountBucketView+`  - name: per_minute
    group_by: [platform]
    measures: {donations: count}
    bucket: {size: 1m, time: stream, retention: 1d}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	// Without --view such a view is passed over; with nothing else left
	// there is nothing to do.
	streamOnlyCfg := filepath.Join(t.TempDir(), "o.yaml")
	if err := os.WriteFile(streamOnlyCfg, []byte(`source:
  table: T
views:
  - name: per_minute
    group_by: [platform]
    measures: {donations: count}
    bucket: {size: 1m, time: stream, retention: 1d}
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"rebuild", "--config", cfg}, "rebuild: --view is required"},
		{[]string{"backfill", "--config", cfg, "--view", "nope"}, `backfill: --view "nope" is not a view of the configuration`},
		{[]string{"verify", "--config", cfg, "--segments", "0"}, "verify: --segments must be between 1 and 1000000"},
		{[]string{"backfill", "--config", cfg, "--rate", "-1"}, "backfill: --rate must not be negative"},
		{[]string{"backfill", "--config", cfg, "--page-size", "0"}, "backfill: --page-size must be at least 1"},
		{[]string{"rebuild", "--config", cfg, "--view", "by_platform", "--hold", "10ms"}, "rebuild: --hold must be at least 1s"},
		{[]string{"verify", "--config", cfg, "--bogus"}, "verify: flag provided but not defined: -bogus"},
		{[]string{"verify", "--config", streamCfg, "--view", "per_minute"}, "verify: view per_minute: its buckets follow stream time (time: stream), which a table scan cannot recount"},
		{[]string{"backfill", "--config", streamOnlyCfg}, "backfill: no view of the configuration can be recounted from the table"},
		{[]string{"rebuild", "--config", streamCfg, "--view", "per_minute"}, "rebuild: view per_minute: its buckets follow stream time (time: stream), which a table scan cannot recount"},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			var out, errOut strings.Builder
			code := runCLI(context.Background(), c.args, &out, &errOut)
			if code != exitConfig {
				t.Errorf("exit %d, want %d", code, exitConfig)
			}
			if got := errOut.String(); got != "streamtally: "+c.want+"\n" {
				t.Errorf("stderr = %q, want the one line %q", got, c.want)
			}
		})
	}
}

// addedView is a view a running deployment adds to its configuration.
const addedView = `  - name: by_amount
    group_by: [amount]
    measures:
      donations: count
`

// configWithAddedView writes worker's configuration with addedView.
func (e *env) configWithAddedView(worker string) string {
	e.t.Helper()
	p := e.config(worker, "")
	b, err := os.ReadFile(p)
	if err != nil {
		e.t.Fatal(err)
	}
	p = strings.TrimSuffix(p, ".yaml") + "-added.yaml"
	if err := os.WriteFile(p, append(b, addedView...), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// A view added to the configuration of a running deployment: the daemons
// rolled out with it mark it lost (the stream was read before it existed),
// and backfill --view seeds it while writes go on.
func TestBackfillSeedsAViewAddedToARunningDeployment(t *testing.T) {
	const n = 2000
	e := newRecountEnv(t)
	e.createTableWithoutStream()
	e.preload(n)
	e.enableStream()
	d := e.start("w1")
	stop := e.churn(n, 5)
	e.mustRun("backfill")
	if code, _ := d.stop(); code != 0 {
		t.Fatalf("daemon exit %d", code)
	}

	cfg := e.configWithAddedView("w1")
	c, err := config.Load(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.views = aggregate.NewViews(c.Specs())
	e.store = publish.NewRedis(e.rdb, e.prefix, e.views)
	d = e.startWith("w1", cfg)
	meta := publish.KeysFor(e.prefix, "by_amount").Meta()
	waitFor(t, 60*time.Second, "the added view marked lost", func() bool {
		why, err := e.rdb.HGet(context.Background(), meta, "lost").Result()
		return err == nil && strings.Contains(why, "run streamtally backfill")
	})
	e.mustRunWith(cfg, "backfill", "--view", "by_amount")
	stop()
	e.waitExact(60 * time.Second)
	out := e.mustRunWith(cfg, "verify")
	if !strings.Contains(out, "view by_amount: equals the table") {
		t.Errorf("verify does not vouch for the added view:\n%s", out)
	}
	if len(logLines(d.logText(), "view is whole again")) == 0 {
		t.Errorf("the daemon did not log that the added view is whole")
	}
}
