package lease

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/streamtally/streamtally"
	"github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
	kclconfig "github.com/vmware/vmware-go-kcl-v2/clientlibrary/config"
	"github.com/vmware/vmware-go-kcl-v2/logger"
)

// Table keeps leases and checkpoints in DynamoDB, in the table layout
// of vmware-go-kcl-v2, whose checkpointer creates the table and takes
// leases. Renewals and checkpoints are conditional on still owning the
// lease: the library writes checkpoints unconditionally, which would let a
// worker whose lease expired overwrite its successor's row.
type Table struct {
	kcl      *checkpoint.DynamoCheckpoint
	ddb      *dynamodb.Client
	table    string
	worker   string
	duration time.Duration
	now      func() time.Time
}

// NewTable returns the lease table of application app, in DynamoDB.
func NewTable(ddb *dynamodb.Client, app, table, worker string, duration time.Duration, log *slog.Logger) *Table {
	// The stream name and region only matter when the library builds its own
	// DynamoDB client; it is handed ours, so they are placeholders.
	cfg := kclconfig.NewKinesisClientLibConfig(app, app, "local", worker).
		WithTableName(table).
		WithFailoverTimeMillis(int(duration / time.Millisecond)).
		WithLogger(kclLogger{log.With("component", "kcl")})
	return &Table{
		kcl:      checkpoint.NewDynamoCheckpoint(cfg).WithDynamoDB(ddb),
		ddb:      ddb,
		table:    table,
		worker:   worker,
		duration: duration,
		now:      time.Now,
	}
}

// Init creates the table if it is absent and waits until it is usable.
func (t *Table) Init(ctx context.Context) error {
	if err := t.kcl.Init(); err != nil {
		var inUse *ddbtypes.ResourceInUseException
		if !errors.As(err, &inUse) { // another worker created it first
			return fmt.Errorf("create lease table %s: %w", t.table, err)
		}
	}
	w := dynamodb.NewTableExistsWaiter(t.ddb, func(o *dynamodb.TableExistsWaiterOptions) {
		o.MinDelay, o.MaxDelay = 200*time.Millisecond, 2*time.Second
	})
	if err := w.Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(t.table)}, 2*time.Minute); err != nil {
		return fmt.Errorf("wait for lease table %s: %w", t.table, err)
	}
	return nil
}

// List reads every shard lease and the set of live workers (whose
// heartbeat row has not expired by the local clock). A table that does not
// exist is ErrNoTable.
func (t *Table) List(ctx context.Context) (map[string]Lease, map[string]bool, error) {
	leases := map[string]Lease{}
	workers := map[string]bool{}
	now := t.now()
	p := dynamodb.NewScanPaginator(t.ddb, &dynamodb.ScanInput{TableName: aws.String(t.table), ConsistentRead: aws.Bool(true)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		var missing *ddbtypes.ResourceNotFoundException
		if errors.As(err, &missing) {
			return nil, nil, fmt.Errorf("%w %s", ErrNoTable, t.table)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("scan lease table %s: %w", t.table, err)
		}
		for _, it := range page.Items {
			l := parseLease(it)
			if strings.HasPrefix(l.Shard, workerRowPrefix) {
				if now.Before(l.Timeout) {
					workers[l.Owner] = true
				}
				continue
			}
			leases[l.Shard] = l
		}
	}
	return leases, workers, nil
}

// Acquire reads the row of shard and takes its lease, if no other worker
// holds an unexpired one, returning the shard's checkpoint.
func (t *Table) Acquire(s streamtally.Shard) (string, error) {
	ctx := context.TODO()
	out, err := t.ddb.GetItem(ctx, &dynamodb.GetItemInput{
		TableName:      aws.String(t.table),
		Key:            map[string]ddbtypes.AttributeValue{checkpoint.LeaseKeyKey: &ddbtypes.AttributeValueMemberS{Value: s.ID}},
		ConsistentRead: aws.Bool(true),
	})
	if err != nil {
		return "", fmt.Errorf("read lease of shard %s: %w", s.ID, err)
	}
	var seen *Lease
	if len(out.Item) > 0 {
		l := parseLease(out.Item)
		seen = &l
	}
	tk, err := t.Take(ctx, s, seen, time.Time{})
	return tk.Checkpoint, err
}

// Take takes the lease of shard as seen in its row (nil: the shard had
// no row), if that row is unchanged and no other worker holds an
// unexpired lease in it. It writes only the owner, the expiry and the
// parent, so the checkpoint and the start time stay whatever they are
// when the write lands, and reads them in the same write. startedAt,
// if not zero, is recorded as the shard's LATEST start when the shard
// has no row yet.
//
// The library's claim rewrites the whole row from what it read a moment
// before, which would drop the start time and could move a checkpoint
// written meanwhile back.
func (t *Table) Take(ctx context.Context, s streamtally.Shard, seen *Lease, startedAt time.Time) (Taken, error) {
	now := t.now()
	names := map[string]string{"#o": checkpoint.LeaseOwnerKey, "#t": checkpoint.LeaseTimeoutKey}
	values := map[string]ddbtypes.AttributeValue{
		":me": &ddbtypes.AttributeValueMemberS{Value: t.worker},
		":nt": &ddbtypes.AttributeValueMemberS{Value: now.Add(t.duration).UTC().Format(time.RFC3339Nano)},
	}
	update := "SET #o = :me, #t = :nt"
	var cond string
	switch {
	case seen == nil:
		names["#k"] = checkpoint.LeaseKeyKey
		cond = "attribute_not_exists(#k)"
		if !startedAt.IsZero() {
			names["#s"] = startedAtKey
			values[":s"] = &ddbtypes.AttributeValueMemberS{Value: startedAt.UTC().Format(time.RFC3339Nano)}
			update += ", #s = :s"
		}
	case seen.Owner == "":
		cond = "attribute_not_exists(#o)"
	case seen.Owner != t.worker && now.Before(seen.Timeout):
		return Taken{}, fmt.Errorf("take lease of shard %s: %w until %s", s.ID, ErrLeaseHeld, seen.Timeout.Format(time.RFC3339))
	default:
		cond = "#o = :o AND #t = :t"
		values[":o"] = &ddbtypes.AttributeValueMemberS{Value: seen.Owner}
		values[":t"] = &ddbtypes.AttributeValueMemberS{Value: seen.timeout}
	}
	if s.Parent != "" {
		names["#p"] = checkpoint.ParentShardIdKey
		values[":p"] = &ddbtypes.AttributeValueMemberS{Value: s.Parent}
		update += ", #p = :p"
	}
	out, err := t.ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(t.table),
		Key:                       map[string]ddbtypes.AttributeValue{checkpoint.LeaseKeyKey: &ddbtypes.AttributeValueMemberS{Value: s.ID}},
		UpdateExpression:          aws.String(update),
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
		ReturnValues:              ddbtypes.ReturnValueAllOld,
	})
	var failed *ddbtypes.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		return Taken{}, fmt.Errorf("take lease of shard %s: %w (its row changed)", s.ID, ErrLeaseHeld)
	}
	if err != nil {
		return Taken{}, fmt.Errorf("take lease of shard %s: %w", s.ID, err)
	}
	old := parseLease(out.Attributes)
	tk := Taken{Checkpoint: old.Checkpoint, StartedAt: old.StartedAt, Existed: len(out.Attributes) > 0, From: old.Owner}
	if !tk.Existed {
		tk.StartedAt = startedAt.UTC()
	}
	return tk, nil
}

// MarkEnded checkpoints ShardEnd for a shard that has left the stream,
// whose row is as seen and held by no live lease, so that its children
// can be read.
func (t *Table) MarkEnded(ctx context.Context, seen Lease) error {
	names := map[string]string{"#c": checkpoint.SequenceNumberKey, "#o": checkpoint.LeaseOwnerKey}
	values := map[string]ddbtypes.AttributeValue{":end": &ddbtypes.AttributeValueMemberS{Value: ShardEnd}}
	cond := "attribute_not_exists(#o)"
	if seen.Owner != "" {
		names["#t"] = checkpoint.LeaseTimeoutKey
		values[":o"] = &ddbtypes.AttributeValueMemberS{Value: seen.Owner}
		values[":t"] = &ddbtypes.AttributeValueMemberS{Value: seen.timeout}
		cond = "#o = :o AND #t = :t"
	}
	_, err := t.ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(t.table),
		Key:                       map[string]ddbtypes.AttributeValue{checkpoint.LeaseKeyKey: &ddbtypes.AttributeValueMemberS{Value: seen.Shard}},
		UpdateExpression:          aws.String("SET #c = :end"),
		ConditionExpression:       aws.String(cond),
		ExpressionAttributeNames:  names,
		ExpressionAttributeValues: values,
	})
	var failed *ddbtypes.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		return fmt.Errorf("end shard %s: %w (its row changed)", seen.Shard, ErrLeaseHeld)
	}
	if err != nil {
		return fmt.Errorf("end shard %s: %w", seen.Shard, err)
	}
	return nil
}

func parseLease(it map[string]ddbtypes.AttributeValue) Lease {
	l := Lease{
		Shard:      str(it[checkpoint.LeaseKeyKey]),
		Parent:     str(it[checkpoint.ParentShardIdKey]),
		Owner:      str(it[checkpoint.LeaseOwnerKey]),
		Checkpoint: str(it[checkpoint.SequenceNumberKey]),
		timeout:    str(it[checkpoint.LeaseTimeoutKey]),
	}
	l.Timeout, _ = time.Parse(time.RFC3339Nano, l.timeout)
	l.StartedAt, _ = time.Parse(time.RFC3339Nano, str(it[startedAtKey]))
	return l
}

// Renew extends this worker's lease of shard.
func (t *Table) Renew(ctx context.Context, shard string) error {
	return t.updateOwned(ctx, shard, checkpoint.LeaseTimeoutKey, t.now().Add(t.duration).UTC().Format(time.RFC3339Nano))
}

// Checkpoint records that everything up to seq (or ShardEnd) is applied.
func (t *Table) Checkpoint(ctx context.Context, shard, seq string) error {
	return t.updateOwned(ctx, shard, checkpoint.SequenceNumberKey, seq)
}

func (t *Table) updateOwned(ctx context.Context, shard, attr, value string) error {
	_, err := t.ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(t.table),
		Key:                       map[string]ddbtypes.AttributeValue{checkpoint.LeaseKeyKey: &ddbtypes.AttributeValueMemberS{Value: shard}},
		UpdateExpression:          aws.String("SET #a = :v"),
		ConditionExpression:       aws.String("#o = :me"),
		ExpressionAttributeNames:  map[string]string{"#a": attr, "#o": checkpoint.LeaseOwnerKey},
		ExpressionAttributeValues: map[string]ddbtypes.AttributeValue{":v": &ddbtypes.AttributeValueMemberS{Value: value}, ":me": &ddbtypes.AttributeValueMemberS{Value: t.worker}},
	})
	var failed *ddbtypes.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		return fmt.Errorf("shard %s: %w", shard, ErrLeaseLost)
	}
	if err != nil {
		return fmt.Errorf("update %s of shard %s: %w", attr, shard, err)
	}
	return nil
}

// Release gives up this worker's lease of shard so that another worker can
// take it at once instead of waiting for it to expire.
func (t *Table) Release(shard string) error {
	err := t.kcl.RemoveLeaseOwner(shard)
	var failed *ddbtypes.ConditionalCheckFailedException
	if errors.As(err, &failed) {
		return nil // not ours any more: nothing to release
	}
	if err != nil {
		return fmt.Errorf("release lease of shard %s: %w", shard, err)
	}
	return nil
}

// Heartbeat announces that this worker is alive until now + duration.
func (t *Table) Heartbeat(ctx context.Context) error {
	_, err := t.ddb.PutItem(ctx, &dynamodb.PutItemInput{
		TableName: aws.String(t.table),
		Item: map[string]ddbtypes.AttributeValue{
			checkpoint.LeaseKeyKey:     &ddbtypes.AttributeValueMemberS{Value: workerRowPrefix + t.worker},
			checkpoint.LeaseOwnerKey:   &ddbtypes.AttributeValueMemberS{Value: t.worker},
			checkpoint.LeaseTimeoutKey: &ddbtypes.AttributeValueMemberS{Value: t.now().Add(t.duration).UTC().Format(time.RFC3339Nano)},
		},
	})
	if err != nil {
		return fmt.Errorf("heartbeat of worker %s: %w", t.worker, err)
	}
	return nil
}

// Leave removes this worker's heartbeat row.
func (t *Table) Leave(ctx context.Context) error {
	_, err := t.ddb.DeleteItem(ctx, &dynamodb.DeleteItemInput{
		TableName: aws.String(t.table),
		Key:       map[string]ddbtypes.AttributeValue{checkpoint.LeaseKeyKey: &ddbtypes.AttributeValueMemberS{Value: workerRowPrefix + t.worker}},
	})
	return err
}

func str(av ddbtypes.AttributeValue) string {
	if s, ok := av.(*ddbtypes.AttributeValueMemberS); ok {
		return s.Value
	}
	return ""
}

// kclLogger routes the library's log lines into slog.
type kclLogger struct{ l *slog.Logger }

func (k kclLogger) Debugf(f string, a ...any) { k.l.Debug(fmt.Sprintf(f, a...)) }
func (k kclLogger) Infof(f string, a ...any)  { k.l.Debug(fmt.Sprintf(f, a...)) }
func (k kclLogger) Warnf(f string, a ...any)  { k.l.Warn(fmt.Sprintf(f, a...)) }
func (k kclLogger) Errorf(f string, a ...any) { k.l.Error(fmt.Sprintf(f, a...)) }
func (k kclLogger) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (k kclLogger) Panicf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (k kclLogger) WithFields(f logger.Fields) logger.Logger {
	args := make([]any, 0, 2*len(f))
	for key, v := range f {
		args = append(args, key, v)
	}
	return kclLogger{k.l.With(args...)}
}
