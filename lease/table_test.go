package lease_test

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"os"
	"reflect"
	"regexp"
	"sync"
	"testing"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/internal/testenv"
	"github.com/streamtally/streamtally/lease"
)

// shortLease keeps the tests that wait for an expiry short.
const shortLease = time.Second

// leaseEnv is a fresh lease table on DynamoDB Local.
type leaseEnv struct {
	t     *testing.T
	ddb   *dynamodb.Client
	app   string
	table string
}

func newLeaseEnv(t *testing.T) *leaseEnv {
	t.Helper()
	return &leaseEnv{t: t, ddb: newDynamo(t), app: "app-" + tableName(t), table: tableName(t)}
}

func (e *leaseEnv) worker(id string) *lease.Table {
	return lease.NewTable(e.ddb, e.app, e.table, id, shortLease, testLogger(e.t))
}

// initWorker returns the lease table as worker id sees it, created if need be.
func (e *leaseEnv) initWorker(id string) *lease.Table {
	e.t.Helper()
	lt := e.worker(id)
	if err := lt.Init(e.t.Context()); err != nil {
		e.t.Fatalf("Init as %s: %v", id, err)
	}
	return lt
}

func (e *leaseEnv) list(lt *lease.Table) (map[string]lease.Lease, map[string]bool) {
	e.t.Helper()
	leases, workers, err := lt.List(e.t.Context())
	if err != nil {
		e.t.Fatalf("List: %v", err)
	}
	return leases, workers
}

// row reads a lease row exactly as stored.
func (e *leaseEnv) row(shard string) map[string]ddbtypes.AttributeValue {
	e.t.Helper()
	out, err := e.ddb.GetItem(e.t.Context(), &dynamodb.GetItemInput{
		TableName:      aws.String(e.table),
		Key:            map[string]ddbtypes.AttributeValue{"ShardID": &ddbtypes.AttributeValueMemberS{Value: shard}},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		e.t.Fatalf("GetItem %s: %v", shard, err)
	}
	return out.Item
}

func (e *leaseEnv) acquire(lt *lease.Table, s streamtally.Shard) string {
	e.t.Helper()
	cp, err := lt.Acquire(s)
	if err != nil {
		e.t.Fatalf("Acquire(%s): %v", s.ID, err)
	}
	return cp
}

func (e *leaseEnv) checkpoint(lt *lease.Table, shard, seq string) {
	e.t.Helper()
	if err := lt.Checkpoint(e.t.Context(), shard, seq); err != nil {
		e.t.Fatalf("Checkpoint(%s, %s): %v", shard, seq, err)
	}
}

// waitExpiry sleeps until a lease taken or renewed before the call has
// expired.
func waitExpiry() { time.Sleep(shortLease + 300*time.Millisecond) }

func TestLeaseTableInitCreatesTableAndToleratesExistingOne(t *testing.T) {
	t.Parallel()
	e := newLeaseEnv(t)
	_, err := e.ddb.DescribeTable(t.Context(), &dynamodb.DescribeTableInput{TableName: aws.String(e.table)})
	var missing *ddbtypes.ResourceNotFoundException
	if !errors.As(err, &missing) {
		t.Fatalf("before Init, DescribeTable returned %v, want ResourceNotFoundException", err)
	}

	e.initWorker("a")
	out, err := e.ddb.DescribeTable(t.Context(), &dynamodb.DescribeTableInput{TableName: aws.String(e.table)})
	if err != nil {
		t.Fatalf("after Init, DescribeTable: %v", err)
	}
	if out.Table.TableStatus != ddbtypes.TableStatusActive {
		t.Errorf("after Init the table is %s, want ACTIVE", out.Table.TableStatus)
	}
	if ks := out.Table.KeySchema; len(ks) != 1 || aws.ToString(ks[0].AttributeName) != "ShardID" || ks[0].KeyType != ddbtypes.KeyTypeHash {
		t.Errorf("key schema %+v, want the KCL layout (hash key ShardID)", ks)
	}
	// A second Init, by the same or another worker, finds the table.
	e.initWorker("a")
	e.initWorker("b")

	// Several workers starting at once race to create the table; every
	// one of them must come up.
	e2 := newLeaseEnv(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	for i := range errs {
		wg.Go(func() { errs[i] = e2.worker("w").Init(t.Context()) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("concurrent Init %d: %v", i, err)
		}
	}
}

func TestLeaseAcquireNewShardRecordsOwnerAndParent(t *testing.T) {
	t.Parallel()
	e := newLeaseEnv(t)
	a := e.initWorker("a")
	before := time.Now()
	if cp := e.acquire(a, streamtally.Shard{ID: "child", Parent: "parent"}); cp != "" {
		t.Errorf("Acquire of a new shard returned checkpoint %q, want none", cp)
	}
	leases, _ := e.list(a)
	l, ok := leases["child"]
	if !ok {
		t.Fatalf("List = %v, want a lease for shard child", leases)
	}
	if l.Owner != "a" || l.Parent != "parent" || l.Checkpoint != "" {
		t.Errorf("lease = %+v, want owner a, parent parent, no checkpoint", l)
	}
	if !l.Timeout.After(before) {
		t.Errorf("lease timeout %v is not in the future of %v", l.Timeout, before)
	}
}

func TestLeaseHeldByAnotherWorkerIsTakenOnlyAfterItExpires(t *testing.T) {
	t.Parallel()
	e := newLeaseEnv(t)
	a, b := e.initWorker("a"), e.initWorker("b")
	s := streamtally.Shard{ID: "s1"}
	e.acquire(a, s)

	if _, err := b.Acquire(s); err == nil {
		t.Fatalf("b took a's unexpired lease")
	}
	if leases, _ := e.list(a); leases["s1"].Owner != "a" {
		t.Fatalf("after b's failed Acquire the owner is %q, want a", leases["s1"].Owner)
	}
	// The owner itself may take its lease again (that is how it renews
	// through the library).
	e.acquire(a, s)

	waitExpiry()
	e.acquire(b, s)
	if leases, _ := e.list(a); leases["s1"].Owner != "b" {
		t.Errorf("after expiry b's Acquire left owner %q, want b", leases["s1"].Owner)
	}
	if _, err := a.Acquire(s); err == nil {
		t.Errorf("a took back b's unexpired lease")
	}
}

func TestLeaseOldOwnerCannotRenewOrCheckpointAfterTakeover(t *testing.T) {
	t.Parallel()
	e := newLeaseEnv(t)
	a, b := e.initWorker("a"), e.initWorker("b")
	s := streamtally.Shard{ID: "s1"}
	e.acquire(a, s)
	e.checkpoint(a, "s1", "100")
	waitExpiry() // a stalls: no renewal
	e.acquire(b, s)
	e.checkpoint(b, "s1", "200")
	if err := b.Renew(t.Context(), "s1"); err != nil {
		t.Fatalf("new owner's Renew: %v", err)
	}
	before := e.row("s1")

	if err := a.Checkpoint(t.Context(), "s1", "150"); !errors.Is(err, lease.ErrLeaseLost) {
		t.Errorf("old owner's Checkpoint returned %v, want an error wrapping ErrLeaseLost", err)
	}
	if err := a.Renew(t.Context(), "s1"); !errors.Is(err, lease.ErrLeaseLost) {
		t.Errorf("old owner's Renew returned %v, want an error wrapping ErrLeaseLost", err)
	}
	after := e.row("s1")
	if !reflect.DeepEqual(before, after) {
		t.Errorf("the old owner's writes changed the row:\nbefore %#v\nafter  %#v", before, after)
	}
	if leases, _ := e.list(b); leases["s1"].Checkpoint != "200" || leases["s1"].Owner != "b" {
		t.Errorf("lease = %+v, want owner b with checkpoint 200", leases["s1"])
	}

	// A checkpoint or renewal of a shard that has no lease row is no
	// ownership either.
	if err := a.Checkpoint(t.Context(), "nobody", "1"); !errors.Is(err, lease.ErrLeaseLost) {
		t.Errorf("Checkpoint of a shard without lease returned %v, want ErrLeaseLost", err)
	}
	if err := a.Renew(t.Context(), "nobody"); !errors.Is(err, lease.ErrLeaseLost) {
		t.Errorf("Renew of a shard without lease returned %v, want ErrLeaseLost", err)
	}
	if leases, _ := e.list(a); len(leases) != 1 {
		t.Errorf("writes to a shard without lease created rows: %v", leases)
	}
}

func TestLeaseRenewExtendsTimeout(t *testing.T) {
	t.Parallel()
	e := newLeaseEnv(t)
	a, b := e.initWorker("a"), e.initWorker("b")
	s := streamtally.Shard{ID: "s1"}
	e.acquire(a, s)
	// Renewed well within every period, the lease never lapses.
	for range 6 {
		time.Sleep(shortLease / 3)
		if err := a.Renew(t.Context(), "s1"); err != nil {
			t.Fatalf("Renew: %v", err)
		}
	}
	if _, err := b.Acquire(s); err == nil {
		t.Errorf("b took a lease that a kept renewing")
	}
}

func TestLeaseReleaseLetsAnotherWorkerAcquireAtOnce(t *testing.T) {
	t.Parallel()
	e := newLeaseEnv(t)
	a, b := e.initWorker("a"), e.initWorker("b")
	s := streamtally.Shard{ID: "s1", Parent: "p"}
	e.acquire(a, s)
	e.checkpoint(a, "s1", "42")
	if err := a.Release("s1"); err != nil {
		t.Fatalf("Release: %v", err)
	}
	leases, _ := e.list(a)
	if l := leases["s1"]; l.Owner != "" || l.Checkpoint != "42" || l.Parent != "p" {
		t.Errorf("released lease = %+v, want no owner, checkpoint 42 and parent p kept", l)
	}

	if cp := e.acquire(b, s); cp != "42" { // no waiting for the expiry
		t.Errorf("Acquire after release returned checkpoint %q, want 42", cp)
	}
	// Releasing a lease one no longer owns is harmless and takes nothing
	// from the new owner.
	if err := a.Release("s1"); err != nil {
		t.Errorf("Release by a former owner: %v", err)
	}
	if leases, _ := e.list(a); leases["s1"].Owner != "b" {
		t.Errorf("after a former owner's Release the owner is %q, want b", leases["s1"].Owner)
	}
}

func TestLeaseHandoverKeepsCheckpoint(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		handOff func(e *leaseEnv, old *lease.Table)
		cp      string
	}{
		{"released", func(e *leaseEnv, old *lease.Table) {
			if err := old.Release("s1"); err != nil {
				e.t.Fatalf("Release: %v", err)
			}
		}, "000000000000000000123"},
		{"expired", func(*leaseEnv, *lease.Table) { waitExpiry() }, "000000000000000000456"},
		{"released at shard end", func(e *leaseEnv, old *lease.Table) {
			if err := old.Release("s1"); err != nil {
				e.t.Fatalf("Release: %v", err)
			}
		}, lease.ShardEnd},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			e := newLeaseEnv(t)
			a, b := e.initWorker("a"), e.initWorker("b")
			s := streamtally.Shard{ID: "s1"}
			e.acquire(a, s)
			e.checkpoint(a, "s1", "000000000000000000001")
			e.checkpoint(a, "s1", tc.cp) // the last one counts
			tc.handOff(e, a)
			if cp := e.acquire(b, s); cp != tc.cp {
				t.Errorf("new owner's Acquire returned checkpoint %q, want the old owner's last %q", cp, tc.cp)
			}
			if leases, _ := e.list(b); leases["s1"].Checkpoint != tc.cp {
				t.Errorf("after the handover the row's checkpoint is %q, want %q", leases["s1"].Checkpoint, tc.cp)
			}
		})
	}
}

func TestHeartbeatRowsListAsWorkersNotLeases(t *testing.T) {
	t.Parallel()
	e := newLeaseEnv(t)
	a, b := e.initWorker("a"), e.initWorker("b")
	for _, lt := range []*lease.Table{a, b} {
		if err := lt.Heartbeat(t.Context()); err != nil {
			t.Fatalf("Heartbeat: %v", err)
		}
	}
	e.acquire(a, streamtally.Shard{ID: "s1"})

	leases, workers := e.list(a)
	if want := map[string]bool{"a": true, "b": true}; !maps.Equal(workers, want) {
		t.Errorf("workers = %v, want %v", workers, want)
	}
	if len(leases) != 1 || leases["s1"].Owner != "a" {
		t.Errorf("leases = %v, want only s1 (heartbeat rows are not leases)", leases)
	}

	if err := a.Leave(t.Context()); err != nil {
		t.Fatalf("Leave: %v", err)
	}
	if _, workers := e.list(a); !maps.Equal(workers, map[string]bool{"b": true}) {
		t.Errorf("after a left, workers = %v, want only b", workers)
	}
	if leases, _ := e.list(a); leases["s1"].Owner != "a" {
		t.Errorf("Leave touched a's lease: %+v", leases["s1"])
	}

	// A worker that stops heartbeating drops out once its row expires.
	waitExpiry()
	if _, workers := e.list(a); len(workers) != 0 {
		t.Errorf("after b's heartbeat expired, workers = %v, want none", workers)
	}
}

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func newDynamo(t *testing.T) *dynamodb.Client {
	t.Helper()
	endpoint := testenv.DynamoDB(t)
	cfg, err := awsconfig.LoadDefaultConfig(t.Context(), awsconfig.WithRegion("us-east-1"),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("x", "x", "")))
	if err != nil {
		t.Fatalf("load AWS config: %v", err)
	}
	return dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		// DynamoDB Local sends no X-Amz-Crc32 on error responses, and the
		// SDK then logs a spurious "failed to close HTTP response body"
		// for every failed condition (aws/aws-sdk-go-v2#3545).
		o.DisableValidateResponseChecksum = true
	})
}

var unsafeName = regexp.MustCompile(`[^a-zA-Z0-9_.-]`)

func tableName(t *testing.T) string {
	name := unsafeName.ReplaceAllString(t.Name(), "_")
	if len(name) > 200 {
		name = name[:200]
	}
	return fmt.Sprintf("%s-%08x", name, rand.Uint32())
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
}
