// Package ddbstreams reads a DynamoDB Stream: every call the daemon, the
// recount commands and status make to the DynamoDB Streams API goes
// through here. Pages are decoded by the project's codec (so a record the
// fold sets aside never fails a whole read) and the service's errors are
// mapped to the domain's: streamtally.ErrIteratorExpired, ErrTrimmed and
// ErrShardGone.
//
// Reads are not retried here beyond what the SDK's own retryer does: the
// daemon retries forever with backoff, status and the recounts give up
// after a few attempts; each caller waits with retry.Wait.
package ddbstreams

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/internal/ddbjson"
)

// API is the part of the DynamoDB Streams API the source calls; the SDK's
// client implements it, and tests wrap it to inject faults.
type API interface {
	DescribeStream(context.Context, *dynamodbstreams.DescribeStreamInput, ...func(*dynamodbstreams.Options)) (*dynamodbstreams.DescribeStreamOutput, error)
	GetShardIterator(context.Context, *dynamodbstreams.GetShardIteratorInput, ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetShardIteratorOutput, error)
	GetRecords(context.Context, *dynamodbstreams.GetRecordsInput, ...func(*dynamodbstreams.Options)) (*dynamodbstreams.GetRecordsOutput, error)
}

// Tables is the part of the DynamoDB API Resolve calls.
type Tables interface {
	DescribeTable(context.Context, *dynamodb.DescribeTableInput, ...func(*dynamodb.Options)) (*dynamodb.DescribeTableOutput, error)
}

// MaxPage is the most records one GetRecords call returns.
const MaxPage = 1000

// Stream reads the shards of one DynamoDB Stream.
type Stream struct {
	api API
	arn string
}

// New returns the stream arn read through api.
func New(api API, arn string) *Stream { return &Stream{api: api, arn: arn} }

// ARN is the stream's ARN.
func (s *Stream) ARN() string { return s.arn }

// StreamError is a problem with the table or stream that the user must fix
// (no stream, wrong view type). The CLI exits 2 on it.
type StreamError struct{ msg string }

func (e *StreamError) Error() string { return e.msg }

// Resolve finds the stream of table (or checks arn) and verifies it
// carries both images, which the fold needs to move items between groups.
func Resolve(ctx context.Context, tables Tables, api API, table, arn string) (string, error) {
	if arn == "" {
		out, err := tables.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
		if err != nil {
			return "", fmt.Errorf("describe table %s: %w", table, err)
		}
		spec := out.Table.StreamSpecification
		if spec == nil || spec.StreamEnabled == nil || !*spec.StreamEnabled || out.Table.LatestStreamArn == nil {
			return "", &StreamError{fmt.Sprintf("table %s has no stream; enable one with: aws dynamodb update-table --table-name %s --stream-specification StreamEnabled=true,StreamViewType=NEW_AND_OLD_IMAGES", table, table)}
		}
		arn = *out.Table.LatestStreamArn
	}
	out, err := api.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(arn), Limit: aws.Int32(1)})
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

// Shards returns every shard of the stream, following DescribeStream's
// pages, sorted by shard ID: DynamoDB makes IDs grow with creation time,
// which puts every parent before its children.
func (s *Stream) Shards(ctx context.Context) ([]streamtally.Shard, error) {
	var shards []streamtally.Shard
	var start *string
	for {
		out, err := s.api.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.arn), ExclusiveStartShardId: start})
		if err != nil {
			return nil, fmt.Errorf("describe stream %s: %w", s.arn, err)
		}
		for _, sh := range out.StreamDescription.Shards {
			closed := sh.SequenceNumberRange != nil && sh.SequenceNumberRange.EndingSequenceNumber != nil
			shards = append(shards, streamtally.Shard{ID: aws.ToString(sh.ShardId), Parent: aws.ToString(sh.ParentShardId), Closed: closed})
		}
		start = out.StreamDescription.LastEvaluatedShardId
		if start == nil {
			break
		}
	}
	sort.Slice(shards, func(i, j int) bool { return shards[i].ID < shards[j].ID })
	return shards, nil
}

// Iterator returns an iterator of shard at p. It returns "" and no error
// for a closed shard with nothing after the position.
func (s *Stream) Iterator(ctx context.Context, shard string, p streamtally.Position) (string, error) {
	in := &dynamodbstreams.GetShardIteratorInput{StreamArn: aws.String(s.arn), ShardId: aws.String(shard), ShardIteratorType: types.ShardIteratorTypeTrimHorizon}
	switch {
	case p.After != "":
		in.ShardIteratorType, in.SequenceNumber = types.ShardIteratorTypeAfterSequenceNumber, aws.String(string(p.After))
	case p.Latest:
		in.ShardIteratorType = types.ShardIteratorTypeLatest
	}
	out, err := s.api.GetShardIterator(ctx, in)
	if err != nil {
		return "", fmt.Errorf("get shard iterator of shard %s: %w", shard, domainError(err))
	}
	return aws.ToString(out.ShardIterator), nil
}

// Read reads one page of at most limit records of shard at iter.
func (s *Stream) Read(ctx context.Context, shard, iter string, limit int) (streamtally.Page, error) {
	page := decodedPage{shard: shard}
	out, err := s.api.GetRecords(withPage(ctx, &page), &dynamodbstreams.GetRecordsInput{
		ShardIterator: aws.String(iter),
		Limit:         aws.Int32(int32(min(limit, MaxPage))),
	}, fastDecode)
	if err != nil {
		return streamtally.Page{}, fmt.Errorf("get records of shard %s: %w", shard, domainError(err))
	}
	recs := page.recs
	if !page.done {
		recs = ddbjson.FromStream(shard, out.Records)
	}
	return streamtally.Page{Records: recs, Next: aws.ToString(out.NextShardIterator)}, nil
}

// domainError adds the domain's name for the service errors a reader acts
// on, keeping the service's error for the message.
func domainError(err error) error {
	var expired *types.ExpiredIteratorException
	var trimmed *types.TrimmedDataAccessException
	var gone *types.ResourceNotFoundException
	switch {
	case errors.As(err, &expired):
		return &kindError{streamtally.ErrIteratorExpired, err}
	case errors.As(err, &trimmed):
		return &kindError{streamtally.ErrTrimmed, err}
	case errors.As(err, &gone):
		return &kindError{streamtally.ErrShardGone, err}
	}
	return err
}

// kindError is err that also is kind for errors.Is, with err's message.
type kindError struct{ kind, err error }

func (e *kindError) Error() string   { return e.err.Error() }
func (e *kindError) Unwrap() []error { return []error{e.kind, e.err} }

// Table names the table whose changes the stream carries.
func (s *Stream) Table(ctx context.Context) (string, error) {
	out, err := s.api.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.arn), Limit: aws.Int32(1)})
	if err != nil {
		return "", fmt.Errorf("describe stream %s: %w", s.arn, err)
	}
	return aws.ToString(out.StreamDescription.TableName), nil
}
