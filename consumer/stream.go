// Package consumer reads a DynamoDB Stream under KCL leases.
//
// Every shard has one lease in a DynamoDB lease table with the KCL schema
// (github.com/vmware/vmware-go-kcl-v2's checkpointer creates and claims
// them). A Worker discovers shards, takes leases for shards whose parent is
// finished, reads each held shard in its own goroutine, hands every batch to
// a Handler, and checkpoints only after the Handler returns. Several
// Workers with the same application share the shards; a dead Worker's
// shards are taken when its leases expire.
package consumer

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/streamtally/streamtally"
)

// Streams is the part of the DynamoDB Streams API the consumer calls.
type Streams interface {
	DescribeStream(context.Context, *dynamodbstreams.DescribeStreamInput, ...func(*dynamodbstreams.Options)) (*dynamodbstreams.DescribeStreamOutput, error)
	GetShardIterator(context.Context, *dynamodbstreams.GetShardIteratorInput, ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetShardIteratorOutput, error)
	GetRecords(context.Context, *dynamodbstreams.GetRecordsInput, ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetRecordsOutput, error)
}

// Shard is one shard of the stream.
type Shard struct {
	ID     string
	Parent string
	Closed bool // it has an ending sequence number: no record will be added
}

// StreamError is a problem with the table or stream that the user must fix
// (no stream, wrong view type). The CLI exits 2 on it.
type StreamError struct{ msg string }

func (e *StreamError) Error() string { return e.msg }

// ResolveStream finds the stream of table (or checks arn) and verifies it
// carries both images, which the fold needs to move items between groups.
func ResolveStream(ctx context.Context, ddb *dynamodb.Client, streams Streams, table, arn string) (string, error) {
	if arn == "" {
		out, err := ddb.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
		if err != nil {
			return "", fmt.Errorf("describe table %s: %w", table, err)
		}
		spec := out.Table.StreamSpecification
		if spec == nil || spec.StreamEnabled == nil || !*spec.StreamEnabled || out.Table.LatestStreamArn == nil {
			return "", &StreamError{fmt.Sprintf("table %s has no stream; enable one with: aws dynamodb update-table --table-name %s --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES", table, table)}
		}
		arn = *out.Table.LatestStreamArn
	}
	out, err := streams.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(arn), Limit: aws.Int32(1)})
	if err != nil {
		return "", fmt.Errorf("describe stream %s: %w", arn, err)
	}
	d := out.StreamDescription
	if d.StreamViewType != types.StreamViewTypeNewAndOldImages {
		name := aws.ToString(d.TableName)
		return "", &StreamError{fmt.Sprintf("stream of table %s has view type %s; streamtally needs NEW_AND_OLD_IMAGES to subtract old values. A stream's view type cannot change: disable it (aws dynamodb update-table --table-name %s --stream-specification StreamEnabled=false), then enable it again with StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES", name, d.StreamViewType, name)}
	}
	return arn, nil
}

// listShards returns every shard of the stream, following DescribeStream's
// pages, sorted by shard ID (which DynamoDB makes grow with creation time).
func listShards(ctx context.Context, s Streams, arn string) ([]Shard, error) {
	var shards []Shard
	var start *string
	for {
		out, err := s.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(arn), ExclusiveStartShardId: start})
		if err != nil {
			return nil, fmt.Errorf("describe stream %s: %w", arn, err)
		}
		for _, sh := range out.StreamDescription.Shards {
			closed := sh.SequenceNumberRange != nil && sh.SequenceNumberRange.EndingSequenceNumber != nil
			shards = append(shards, Shard{ID: aws.ToString(sh.ShardId), Parent: aws.ToString(sh.ParentShardId), Closed: closed})
		}
		start = out.StreamDescription.LastEvaluatedShardId
		if start == nil {
			break
		}
	}
	sort.Slice(shards, func(i, j int) bool { return shards[i].ID < shards[j].ID })
	return shards, nil
}

// toRecords converts SDK records to the fold's input. A record the fold
// cannot understand (an unknown event name) becomes a Record with Event 0,
// which contributes nothing.
func toRecords(shard string, in []types.Record) []streamtally.Record {
	out := make([]streamtally.Record, len(in))
	for i := range in {
		r := &in[i]
		rec := streamtally.Record{Shard: shard}
		switch r.EventName {
		case types.OperationTypeInsert:
			rec.Event = streamtally.Insert
		case types.OperationTypeModify:
			rec.Event = streamtally.Modify
		case types.OperationTypeRemove:
			rec.Event = streamtally.Remove
		}
		if d := r.Dynamodb; d != nil {
			rec.SequenceNumber = aws.ToString(d.SequenceNumber)
			rec.Keys, rec.Old, rec.New = d.Keys, d.OldImage, d.NewImage
			rec.Created = aws.ToTime(d.ApproximateCreationDateTime)
		}
		out[i] = rec
	}
	return out
}

// backoff waits before attempt n (0-based) with capped exponential growth
// and full jitter, so that many shards retrying at once spread out.
func backoff(ctx context.Context, n int, jitter func(int64) int64) error {
	d := 100 * time.Millisecond << min(n, 6) // 100ms .. 6.4s
	d = min(d, 5*time.Second)
	d = time.Duration(jitter(int64(d)/2) + int64(d)/2)
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// ListShards returns every shard of the stream arn, sorted by shard ID,
// which puts every parent before its children.
func ListShards(ctx context.Context, s Streams, arn string) ([]Shard, error) {
	return listShards(ctx, s, arn)
}

// ToRecords converts one shard's SDK records to the fold's input, as the
// Worker hands them to its Handler.
func ToRecords(shard string, in []types.Record) []streamtally.Record {
	return toRecords(shard, in)
}
