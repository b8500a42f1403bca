//go:build bench

package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"github.com/aws/smithy-go/middleware"
	smithyhttp "github.com/aws/smithy-go/transport/http"
	"github.com/redis/go-redis/v9"
)

// shardsInOrder lists the stream's shards, parents before children (shard
// IDs grow with creation time).
func shardsInOrder(ctx context.Context, s *dynamodbstreams.Client, arn string) ([]string, error) {
	var ids []string
	var start *string
	for {
		out, err := s.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: aws.String(arn), ExclusiveStartShardId: start})
		if err != nil {
			return nil, err
		}
		for _, sh := range out.StreamDescription.Shards {
			ids = append(ids, aws.ToString(sh.ShardId))
		}
		if start = out.StreamDescription.LastEvaluatedShardId; start == nil {
			break
		}
	}
	sort.Strings(ids)
	return ids, nil
}

// readStream reads every shard from its trim horizon, in order, handing
// each page to page, until want records were read or the stream is read
// to its tip. With wait, an empty read at the tip waits pollInterval and
// reads again (a consumer that keeps up with writes) until ctx ends.
func readStream(ctx context.Context, s *dynamodbstreams.Client, arn string, want int, wait time.Duration,
	get func(ctx context.Context, in *dynamodbstreams.GetRecordsInput, left int) (n int, next *string, err error)) (int, error) {
	ids, err := shardsInOrder(ctx, s, arn)
	if err != nil {
		return 0, err
	}
	total := 0
	for _, id := range ids {
		it, err := s.GetShardIterator(ctx, &dynamodbstreams.GetShardIteratorInput{
			StreamArn: aws.String(arn), ShardId: aws.String(id), ShardIteratorType: types.ShardIteratorTypeTrimHorizon})
		if err != nil {
			return total, fmt.Errorf("shard %s: %w", id, err)
		}
		iter := it.ShardIterator
		for iter != nil && (want <= 0 || total < want) {
			n, next, err := get(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: iter, Limit: aws.Int32(1000)}, want-total)
			if err != nil {
				if ctx.Err() != nil {
					return total, nil
				}
				return total, fmt.Errorf("shard %s: %w", id, err)
			}
			total += n
			iter = next
			if n == 0 {
				if wait == 0 {
					break // at the tip of an open shard
				}
				select {
				case <-ctx.Done():
					return total, nil
				case <-time.After(wait):
				}
			}
		}
	}
	return total, nil
}

// bareReader is the physical limit of catch-up: it calls GetRecords over
// the stream and throws the records away. It does not even decode them: a
// middleware reads the body, counts the records and keeps only the next
// iterator, so what it measures is DynamoDB Local serving the pages.
func bareReader(ctx context.Context, s *dynamodbstreams.Client, arn string, want int) (int, error) {
	return readStream(ctx, s, arn, want, 0, func(ctx context.Context, in *dynamodbstreams.GetRecordsInput, _ int) (int, *string, error) {
		var count int
		out, err := s.GetRecords(ctx, in, func(o *dynamodbstreams.Options) {
			o.APIOptions = append(o.APIOptions, func(st *middleware.Stack) error {
				return st.Deserialize.Insert(discard{&count}, "OperationDeserializer", middleware.After)
			})
		})
		if err != nil {
			return 0, nil, err
		}
		return count, out.NextShardIterator, nil
	})
}

type discard struct{ count *int }

func (discard) ID() string { return "bench.discard" }

func (d discard) HandleDeserialize(ctx context.Context, in middleware.DeserializeInput, next middleware.DeserializeHandler) (
	middleware.DeserializeOutput, middleware.Metadata, error,
) {
	out, md, err := next.HandleDeserialize(ctx, in)
	resp, ok := out.RawResponse.(*smithyhttp.Response)
	if err != nil || !ok || resp.StatusCode != 200 {
		return out, md, err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return out, md, err
	}
	*d.count = bytes.Count(body, []byte(`"eventID"`))
	rest := []byte("{}")
	const key = `"NextShardIterator":"`
	if i := bytes.Index(body, []byte(key)); i >= 0 {
		j := bytes.IndexByte(body[i+len(key):], '"')
		rest = append(append([]byte(`{`+key), body[i+len(key):i+len(key)+j]...), `"}`...)
	}
	resp.Body = io.NopCloser(bytes.NewReader(rest))
	resp.Header.Del("X-Amz-Crc32")
	return out, md, nil
}

// naiveView is a view as the seed's Lambda computed it: one hash per
// measure, keyed by a single attribute.
type naiveView struct {
	name, group string
	measures    []naiveMeasure
}

type naiveMeasure struct{ name, sumAttr string } // sumAttr "" counts

// naiveConsumer does what the seed's Lambda did, for every record: for
// each view and measure, one HINCRBY (HINCRBYFLOAT for sums) and one
// PUBLISH of that change, each a round trip of its own, with no batching.
// To stay exact it subtracts the old image (updates, deletes) and adds the
// new one, as the seed did not. Records come through the SDK's
// deserializer, as the Lambda runtime hands them over decoded.
type naiveConsumer struct {
	streams *dynamodbstreams.Client
	rdb     *redis.Client
	views   []naiveView
	onPub   func() // called after each PUBLISH, if set
}

func (c *naiveConsumer) run(ctx context.Context, arn string, want int, wait time.Duration) (int, error) {
	return readStream(ctx, c.streams, arn, want, wait, func(ctx context.Context, in *dynamodbstreams.GetRecordsInput, left int) (int, *string, error) {
		out, err := c.streams.GetRecords(ctx, in)
		if err != nil {
			return 0, nil, err
		}
		recs := out.Records
		if want > 0 && len(recs) > left {
			recs = recs[:left] // a fixed number of records: stop there
		}
		for _, r := range recs {
			if r.Dynamodb == nil {
				continue
			}
			if err := c.apply(ctx, r.Dynamodb.OldImage, -1); err != nil {
				return 0, nil, err
			}
			if err := c.apply(ctx, r.Dynamodb.NewImage, +1); err != nil {
				return 0, nil, err
			}
		}
		return len(recs), out.NextShardIterator, nil
	})
}

func (c *naiveConsumer) apply(ctx context.Context, img map[string]types.AttributeValue, sign int) error {
	if img == nil {
		return nil
	}
	for _, v := range c.views {
		g, ok := img[v.group].(*types.AttributeValueMemberS)
		if !ok {
			continue
		}
		for _, m := range v.measures {
			key := "naive:" + v.name + ":" + m.name
			var delta string
			if m.sumAttr == "" {
				delta = strconv.Itoa(sign)
				if err := c.rdb.HIncrBy(ctx, key, g.Value, int64(sign)).Err(); err != nil {
					return err
				}
			} else {
				n, ok := img[m.sumAttr].(*types.AttributeValueMemberN)
				if !ok {
					continue
				}
				f, _ := strconv.ParseFloat(n.Value, 64)
				f *= float64(sign)
				delta = strconv.FormatFloat(f, 'f', -1, 64)
				if err := c.rdb.HIncrByFloat(ctx, key, g.Value, f).Err(); err != nil {
					return err
				}
			}
			if err := c.rdb.Publish(ctx, "naive:"+v.name, strings.Join([]string{m.name, g.Value, delta}, " ")).Err(); err != nil {
				return err
			}
		}
	}
	return nil
}
