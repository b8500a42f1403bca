package streamstest

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"github.com/aws/smithy-go"
)

// newClient builds the client the same way the real consumer does, so these
// tests prove wire compatibility rather than just internal consistency.
// Retries are off by default so that injected errors surface directly.
func newClient(s *Server, optFns ...func(*dynamodbstreams.Options)) *dynamodbstreams.Client {
	return dynamodbstreams.New(dynamodbstreams.Options{
		BaseEndpoint: aws.String(s.URL),
		Region:       "us-east-1",
		Credentials:  credentials.NewStaticCredentialsProvider("x", "x", ""),
		Retryer:      aws.NopRetryer{},
	}, optFns...)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func iter(t *testing.T, c *dynamodbstreams.Client, s *Server, shardID string, typ types.ShardIteratorType, seq string) *string {
	t.Helper()
	in := &dynamodbstreams.GetShardIteratorInput{
		StreamArn:         aws.String(s.StreamARN),
		ShardId:           aws.String(shardID),
		ShardIteratorType: typ,
	}
	if seq != "" {
		in.SequenceNumber = aws.String(seq)
	}
	out, err := c.GetShardIterator(ctx(t), in)
	if err != nil {
		t.Fatalf("GetShardIterator(%s, %s, %q): %v", shardID, typ, seq, err)
	}
	if out.ShardIterator == nil || *out.ShardIterator == "" {
		t.Fatalf("GetShardIterator(%s): empty iterator", shardID)
	}
	return out.ShardIterator
}

func getRecords(t *testing.T, c *dynamodbstreams.Client, it *string, limit int32) *dynamodbstreams.GetRecordsOutput {
	t.Helper()
	in := &dynamodbstreams.GetRecordsInput{ShardIterator: it}
	if limit > 0 {
		in.Limit = aws.Int32(limit)
	}
	out, err := c.GetRecords(ctx(t), in)
	if err != nil {
		t.Fatalf("GetRecords: %v", err)
	}
	return out
}

func seqs(recs []types.Record) []string {
	var out []string
	for _, r := range recs {
		out = append(out, aws.ToString(r.Dynamodb.SequenceNumber))
	}
	return out
}

func equal(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") }

func insert(pk string) Record {
	return Record{NewImage: Item("pk", pk, "amount", N("1"))}
}

func TestDescribeStreamPagingAndLineage(t *testing.T) {
	s := NewServer(t)
	s.SetDescribePageSize(2)
	// A split: s1 → (s2, s3); s2 → s4; s5 is an unrelated root.
	s.AddShard("s1", "")
	s.Append("s1", insert("a"), insert("b"))
	s.CloseShard("s1")
	s.AddShard("s2", "s1")
	s.AddShard("s3", "s1")
	s.CloseShard("s2") // closed while empty
	s.AddShard("s4", "s2")
	s.AddShard("s5", "")

	c := newClient(s)
	var (
		shards []types.Shard
		start  *string
		pages  int
	)
	for {
		out, err := c.DescribeStream(ctx(t), &dynamodbstreams.DescribeStreamInput{
			StreamArn:             aws.String(s.StreamARN),
			ExclusiveStartShardId: start,
		})
		if err != nil {
			t.Fatalf("DescribeStream: %v", err)
		}
		pages++
		d := out.StreamDescription
		if aws.ToString(d.StreamArn) != s.StreamARN || d.StreamStatus != types.StreamStatusEnabled ||
			d.StreamViewType != types.StreamViewTypeNewAndOldImages || aws.ToString(d.TableName) != s.TableName {
			t.Fatalf("unexpected description header: %+v", d)
		}
		if len(d.KeySchema) != 1 || aws.ToString(d.KeySchema[0].AttributeName) != "pk" || d.KeySchema[0].KeyType != types.KeyTypeHash {
			t.Fatalf("unexpected key schema: %+v", d.KeySchema)
		}
		shards = append(shards, d.Shards...)
		if d.LastEvaluatedShardId == nil {
			break
		}
		start = d.LastEvaluatedShardId
	}
	if pages != 3 || s.Calls("DescribeStream") != 3 {
		t.Fatalf("pages = %d, calls = %d, want 3 each", pages, s.Calls("DescribeStream"))
	}

	wantParent := map[string]string{"s1": "", "s2": "s1", "s3": "s1", "s4": "s2", "s5": ""}
	wantClosed := map[string]bool{"s1": true, "s2": true}
	byID := map[string]types.Shard{}
	var ids []string
	for _, sh := range shards {
		id := aws.ToString(sh.ShardId)
		ids = append(ids, id)
		byID[id] = sh
		if got := aws.ToString(sh.ParentShardId); got != wantParent[id] {
			t.Errorf("%s parent = %q, want %q", id, got, wantParent[id])
		}
		if wantParent[id] == "" && sh.ParentShardId != nil {
			t.Errorf("%s: ParentShardId should be omitted, got %q", id, *sh.ParentShardId)
		}
		r := sh.SequenceNumberRange
		if r == nil || len(aws.ToString(r.StartingSequenceNumber)) != 21 {
			t.Fatalf("%s: bad SequenceNumberRange %+v", id, r)
		}
		if closed := r.EndingSequenceNumber != nil; closed != wantClosed[id] {
			t.Errorf("%s closed = %v, want %v", id, closed, wantClosed[id])
		}
	}
	if !equal(ids, []string{"s1", "s2", "s3", "s4", "s5"}) {
		t.Fatalf("shard ids = %v", ids)
	}
	// Children must sort after everything their parent held.
	s1End := aws.ToString(byID["s1"].SequenceNumberRange.EndingSequenceNumber)
	for _, child := range []string{"s2", "s3"} {
		if st := aws.ToString(byID[child].SequenceNumberRange.StartingSequenceNumber); st <= s1End {
			t.Errorf("%s start %s not after parent end %s", child, st, s1End)
		}
	}
	// An empty closed shard ends where it starts.
	if r := byID["s2"].SequenceNumberRange; aws.ToString(r.StartingSequenceNumber) != aws.ToString(r.EndingSequenceNumber) {
		t.Errorf("empty closed s2 range = %s..%s", aws.ToString(r.StartingSequenceNumber), aws.ToString(r.EndingSequenceNumber))
	}

	// The request Limit wins when it is below the page size.
	out, err := c.DescribeStream(ctx(t), &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.StreamARN), Limit: aws.Int32(1)})
	if err != nil {
		t.Fatal(err)
	}
	if len(out.StreamDescription.Shards) != 1 || aws.ToString(out.StreamDescription.LastEvaluatedShardId) != "s1" {
		t.Fatalf("Limit 1: shards=%d last=%v", len(out.StreamDescription.Shards), out.StreamDescription.LastEvaluatedShardId)
	}

	// ShardFilter CHILD_SHARDS lists direct children only.
	out, err = c.DescribeStream(ctx(t), &dynamodbstreams.DescribeStreamInput{
		StreamArn:   aws.String(s.StreamARN),
		ShardFilter: &types.ShardFilter{Type: types.ShardFilterTypeChildShards, ShardId: aws.String("s1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	var children []string
	for _, sh := range out.StreamDescription.Shards {
		children = append(children, aws.ToString(sh.ShardId))
	}
	if !equal(children, []string{"s2", "s3"}) {
		t.Fatalf("children of s1 = %v", children)
	}

	_, err = c.DescribeStream(ctx(t), &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String("arn:aws:dynamodb:us-east-1:000000000000:table/x/stream/y")})
	var rnf *types.ResourceNotFoundException
	if !errors.As(err, &rnf) {
		t.Fatalf("unknown stream: err = %v, want ResourceNotFoundException", err)
	}
}

func TestClosedShardReadsToEnd(t *testing.T) {
	s := NewServer(t)
	s.AddShard("s1", "")
	created := time.Date(2024, 5, 6, 7, 8, 9, 123e6, time.UTC)
	want := s.Append("s1",
		Record{NewImage: Item("pk", "a", "amount", N("10.5")), ApproximateCreation: created},
		Record{OldImage: Item("pk", "a", "amount", N("10.5")), NewImage: Item("pk", "a", "amount", N("11"))},
		Record{OldImage: Item("pk", "a", "amount", N("11"))},
		insert("b"),
		insert("c"),
	)
	s.CloseShard("s1")
	for i := 1; i < len(want); i++ {
		if want[i] <= want[i-1] {
			t.Fatalf("sequence numbers not increasing: %v", want)
		}
	}

	c := newClient(s)
	it := iter(t, c, s, "s1", types.ShardIteratorTypeTrimHorizon, "")
	var (
		got     []types.Record
		batches []int
	)
	for it != nil {
		out := getRecords(t, c, it, 2)
		batches = append(batches, len(out.Records))
		got = append(got, out.Records...)
		it = out.NextShardIterator
		if len(batches) > 10 {
			t.Fatal("closed shard never ended")
		}
	}
	if len(batches) != 3 || batches[0] != 2 || batches[1] != 2 || batches[2] != 1 {
		t.Fatalf("batch sizes = %v, want [2 2 1]", batches)
	}
	if !equal(seqs(got), want) {
		t.Fatalf("seqs = %v, want %v", seqs(got), want)
	}

	r := got[0]
	if r.EventName != types.OperationTypeInsert || aws.ToString(r.EventVersion) != "1.1" ||
		aws.ToString(r.EventSource) != "aws:dynamodb" || aws.ToString(r.AwsRegion) != "us-east-1" || aws.ToString(r.EventID) == "" {
		t.Fatalf("record envelope = %+v", r)
	}
	d := r.Dynamodb
	if !d.ApproximateCreationDateTime.Equal(created) {
		t.Errorf("ApproximateCreationDateTime = %v, want %v", d.ApproximateCreationDateTime, created)
	}
	if d.StreamViewType != types.StreamViewTypeNewAndOldImages || aws.ToInt64(d.SizeBytes) <= 0 || d.OldImage != nil {
		t.Errorf("stream record = %+v", d)
	}
	if pk, ok := d.Keys["pk"].(*types.AttributeValueMemberS); !ok || pk.Value != "a" || len(d.Keys) != 1 {
		t.Errorf("Keys = %#v", d.Keys)
	}
	if amt, ok := d.NewImage["amount"].(*types.AttributeValueMemberN); !ok || amt.Value != "10.5" {
		t.Errorf("NewImage amount = %#v", d.NewImage["amount"])
	}
	if got[1].EventName != types.OperationTypeModify || got[1].Dynamodb.OldImage == nil || got[1].Dynamodb.NewImage == nil {
		t.Errorf("second record = %+v", got[1])
	}
	if got[2].EventName != types.OperationTypeRemove || got[2].Dynamodb.NewImage != nil {
		t.Errorf("third record = %+v", got[2])
	}
	if pk := got[2].Dynamodb.Keys["pk"].(*types.AttributeValueMemberS); pk.Value != "a" {
		t.Errorf("REMOVE keys = %#v", got[2].Dynamodb.Keys)
	}

	// An empty closed shard ends on the first call.
	s.AddShard("empty", "s1")
	s.CloseShard("empty")
	out := getRecords(t, c, iter(t, c, s, "empty", types.ShardIteratorTypeTrimHorizon, ""), 0)
	if len(out.Records) != 0 || out.NextShardIterator != nil {
		t.Fatalf("empty closed shard: %d records, next=%v", len(out.Records), out.NextShardIterator)
	}
}

func TestOpenShardWaitsForRecords(t *testing.T) {
	s := NewServer(t)
	s.AddShard("s1", "")
	first := s.Append("s1", insert("a"))
	c := newClient(s)

	out := getRecords(t, c, iter(t, c, s, "s1", types.ShardIteratorTypeTrimHorizon, ""), 0)
	if !equal(seqs(out.Records), first) || out.NextShardIterator == nil {
		t.Fatalf("first read: seqs=%v next=%v", seqs(out.Records), out.NextShardIterator)
	}
	caughtUp := out.NextShardIterator

	out = getRecords(t, c, caughtUp, 0)
	if len(out.Records) != 0 || out.NextShardIterator == nil {
		t.Fatalf("caught-up open shard: %d records, next=%v", len(out.Records), out.NextShardIterator)
	}
	if *out.NextShardIterator != *caughtUp {
		t.Errorf("empty poll moved the iterator")
	}

	more := s.Append("s1", insert("b"), insert("c"))
	out = getRecords(t, c, out.NextShardIterator, 0)
	if !equal(seqs(out.Records), more) || out.NextShardIterator == nil {
		t.Fatalf("after append: seqs=%v want %v next=%v", seqs(out.Records), more, out.NextShardIterator)
	}

	// Closing a shard a reader has already caught up on ends it on the next
	// poll, with the same iterator it already holds.
	s.CloseShard("s1")
	out = getRecords(t, c, out.NextShardIterator, 0)
	if len(out.Records) != 0 || out.NextShardIterator != nil {
		t.Fatalf("after close: %d records, next=%v", len(out.Records), out.NextShardIterator)
	}
}

func TestIteratorTypes(t *testing.T) {
	s := NewServer(t)
	s.AddShard("s1", "")
	all := s.Append("s1", insert("a"), insert("b"), insert("c"), insert("d"))
	c := newClient(s)

	out := getRecords(t, c, iter(t, c, s, "s1", types.ShardIteratorTypeAfterSequenceNumber, all[1]), 0)
	if !equal(seqs(out.Records), all[2:]) {
		t.Errorf("AFTER %s: %v, want %v", all[1], seqs(out.Records), all[2:])
	}
	out = getRecords(t, c, iter(t, c, s, "s1", types.ShardIteratorTypeAtSequenceNumber, all[1]), 0)
	if !equal(seqs(out.Records), all[1:]) {
		t.Errorf("AT %s: %v, want %v", all[1], seqs(out.Records), all[1:])
	}
	// Resuming after the last record of a closed shard means it is finished.
	s.CloseShard("s1")
	out = getRecords(t, c, iter(t, c, s, "s1", types.ShardIteratorTypeAfterSequenceNumber, all[3]), 0)
	if len(out.Records) != 0 || out.NextShardIterator != nil {
		t.Errorf("AFTER last of closed: %d records, next=%v", len(out.Records), out.NextShardIterator)
	}

	s.AddShard("s2", "s1")
	out = getRecords(t, c, iter(t, c, s, "s2", types.ShardIteratorTypeLatest, ""), 0)
	if len(out.Records) != 0 || out.NextShardIterator == nil {
		t.Fatalf("LATEST on empty open shard: %d records, next=%v", len(out.Records), out.NextShardIterator)
	}
	latest := s.Append("s2", insert("e"))
	if latest[0] <= all[3] {
		t.Errorf("child seq %s not after parent's last %s", latest[0], all[3])
	}
	out = getRecords(t, c, out.NextShardIterator, 0)
	if !equal(seqs(out.Records), latest) {
		t.Errorf("after LATEST: %v, want %v", seqs(out.Records), latest)
	}

	_, err := c.GetShardIterator(ctx(t), &dynamodbstreams.GetShardIteratorInput{
		StreamArn: aws.String(s.StreamARN), ShardId: aws.String("nope"), ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
	})
	var rnf *types.ResourceNotFoundException
	if !errors.As(err, &rnf) {
		t.Errorf("unknown shard: err = %v, want ResourceNotFoundException", err)
	}
}

func TestMaxRecordsPerCall(t *testing.T) {
	s := NewServer(t)
	s.SetMaxRecordsPerCall(3)
	s.AddShard("s1", "")
	for range 10 {
		s.Append("s1", insert("x"))
	}
	c := newClient(s)
	out := getRecords(t, c, iter(t, c, s, "s1", types.ShardIteratorTypeTrimHorizon, ""), 0)
	if len(out.Records) != 3 {
		t.Fatalf("got %d records, want cap of 3", len(out.Records))
	}
	out = getRecords(t, c, out.NextShardIterator, 2)
	if len(out.Records) != 2 {
		t.Fatalf("got %d records, want request limit 2", len(out.Records))
	}
}

func TestInjectedErrorsAreTyped(t *testing.T) {
	s := NewServer(t)
	s.AddShard("s1", "")
	s.Append("s1", insert("a"))
	c := newClient(s)
	it := iter(t, c, s, "s1", types.ShardIteratorTypeTrimHorizon, "")

	s.InjectErrors("GetRecords", 1, "LimitExceededException")
	s.InjectErrors("GetRecords", 1, "ExpiredIteratorException")
	s.InjectErrors("GetRecords", 1, "TrimmedDataAccessException")
	s.InjectErrors("GetRecords", 1, "InternalServerError")

	_, err := c.GetRecords(ctx(t), &dynamodbstreams.GetRecordsInput{ShardIterator: it})
	var le *types.LimitExceededException
	if !errors.As(err, &le) || le.ErrorMessage() != "injected by streamstest" {
		t.Fatalf("1st: err = %v, want LimitExceededException with message", err)
	}
	_, err = c.GetRecords(ctx(t), &dynamodbstreams.GetRecordsInput{ShardIterator: it})
	var ee *types.ExpiredIteratorException
	if !errors.As(err, &ee) {
		t.Fatalf("2nd: err = %v, want ExpiredIteratorException", err)
	}
	_, err = c.GetRecords(ctx(t), &dynamodbstreams.GetRecordsInput{ShardIterator: it})
	var te *types.TrimmedDataAccessException
	if !errors.As(err, &te) {
		t.Fatalf("3rd: err = %v, want TrimmedDataAccessException", err)
	}
	_, err = c.GetRecords(ctx(t), &dynamodbstreams.GetRecordsInput{ShardIterator: it})
	var ie *types.InternalServerError
	var re interface{ HTTPStatusCode() int }
	if !errors.As(err, &ie) || !errors.As(err, &re) || re.HTTPStatusCode() != http.StatusInternalServerError {
		t.Fatalf("4th: err = %v, want InternalServerError with HTTP 500", err)
	}
	if out := getRecords(t, c, it, 0); len(out.Records) != 1 {
		t.Fatalf("after injections: %d records, want 1", len(out.Records))
	}
	if n := s.Calls("GetRecords"); n != 5 {
		t.Fatalf("Calls(GetRecords) = %d, want 5", n)
	}

	// An unmodelled name still arrives with its code, as a generic API error.
	s.InjectErrors("DescribeStream", 1, "ThrottlingException")
	_, err = c.DescribeStream(ctx(t), &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(s.StreamARN)})
	var ae smithy.APIError
	if !errors.As(err, &ae) || ae.ErrorCode() != "ThrottlingException" {
		t.Fatalf("DescribeStream: err = %v, want ThrottlingException", err)
	}
}

func TestExpireIterators(t *testing.T) {
	s := NewServer(t)
	s.AddShard("s1", "")
	seq := s.Append("s1", insert("a"))
	c := newClient(s)
	it := iter(t, c, s, "s1", types.ShardIteratorTypeTrimHorizon, "")
	s.ExpireIterators()
	_, err := c.GetRecords(ctx(t), &dynamodbstreams.GetRecordsInput{ShardIterator: it})
	var ee *types.ExpiredIteratorException
	if !errors.As(err, &ee) {
		t.Fatalf("err = %v, want ExpiredIteratorException", err)
	}
	// The usual recovery: a fresh iterator from the last checkpoint.
	out := getRecords(t, c, iter(t, c, s, "s1", types.ShardIteratorTypeAtSequenceNumber, seq[0]), 0)
	if !equal(seqs(out.Records), seq) {
		t.Fatalf("after re-acquire: %v", seqs(out.Records))
	}
}

// The SDK's standard retryer treats LimitExceededException as throttling; the
// server must look enough like DynamoDB for that classification to work.
func TestStandardRetryerRetriesThrottling(t *testing.T) {
	s := NewServer(t)
	s.AddShard("s1", "")
	c := newClient(s, func(o *dynamodbstreams.Options) {
		o.Retryer = retry.NewStandard(func(so *retry.StandardOptions) {
			so.Backoff = retry.BackoffDelayerFunc(func(int, error) (time.Duration, error) { return 0, nil })
		})
	})
	s.InjectErrors("GetShardIterator", 2, "LimitExceededException")
	iter(t, c, s, "s1", types.ShardIteratorTypeTrimHorizon, "")
	if n := s.Calls("GetShardIterator"); n != 3 {
		t.Fatalf("Calls = %d, want 3 (two throttled attempts, then success)", n)
	}
}

func TestItemHelper(t *testing.T) {
	s := NewServer(t)
	s.AddShard("s1", "")
	s.Append("s1", Record{NewImage: Item(
		"pk", "a",
		"amount", N("10.5"),
		"count", 3,
		"ok", true,
		"gone", nil,
		"tags", []any{"x", N("1")},
		"addr", map[string]any{"city": "Oslo"},
		"nested", Item("inner", "v"),
		"set", Raw{"SS": []string{"p", "q"}},
	)})
	c := newClient(s)
	img := getRecords(t, c, iter(t, c, s, "s1", types.ShardIteratorTypeTrimHorizon, ""), 0).Records[0].Dynamodb.NewImage

	if v := img["amount"].(*types.AttributeValueMemberN).Value; v != "10.5" {
		t.Errorf("amount = %s", v)
	}
	if v := img["count"].(*types.AttributeValueMemberN).Value; v != "3" {
		t.Errorf("count = %s", v)
	}
	if v := img["ok"].(*types.AttributeValueMemberBOOL).Value; !v {
		t.Errorf("ok = %v", v)
	}
	if v := img["gone"].(*types.AttributeValueMemberNULL).Value; !v {
		t.Errorf("gone = %v", v)
	}
	if l := img["tags"].(*types.AttributeValueMemberL).Value; len(l) != 2 || l[1].(*types.AttributeValueMemberN).Value != "1" {
		t.Errorf("tags = %#v", l)
	}
	if m := img["addr"].(*types.AttributeValueMemberM).Value; m["city"].(*types.AttributeValueMemberS).Value != "Oslo" {
		t.Errorf("addr = %#v", m)
	}
	if m := img["nested"].(*types.AttributeValueMemberM).Value; m["inner"].(*types.AttributeValueMemberS).Value != "v" {
		t.Errorf("nested = %#v", m)
	}
	if ss := img["set"].(*types.AttributeValueMemberSS).Value; len(ss) != 2 {
		t.Errorf("set = %#v", ss)
	}
}

// Consumers poll shards from several goroutines; run with -race to check
// the server's locking.
func TestConcurrentUse(t *testing.T) {
	s := NewServer(t)
	c := newClient(s)
	const shards = 4
	for i := range shards {
		s.AddShard(string(rune('a'+i)), "")
	}
	var wg sync.WaitGroup
	for i := range shards {
		id := string(rune('a' + i))
		wg.Go(func() {
			for range 20 {
				s.Append(id, insert(id))
			}
			s.CloseShard(id)
		})
		wg.Go(func() {
			// No t.Fatal here: it must not be called off the test goroutine.
			gi, err := c.GetShardIterator(ctx(t), &dynamodbstreams.GetShardIteratorInput{
				StreamArn: aws.String(s.StreamARN), ShardId: aws.String(id), ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
			})
			if err != nil {
				t.Error(err)
				return
			}
			it, n := gi.ShardIterator, 0
			for it != nil {
				out, err := c.GetRecords(ctx(t), &dynamodbstreams.GetRecordsInput{ShardIterator: it, Limit: aws.Int32(3)})
				if err != nil {
					t.Error(err)
					return
				}
				n += len(out.Records)
				it = out.NextShardIterator
			}
			if n != 20 {
				t.Errorf("shard %s: read %d records, want 20", id, n)
			}
		})
	}
	wg.Wait()
}
