//go:build bench

package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/streamtally/streamtally/internal/loadgen"
)

const tableName = "Donations"

func awsConfig(t *testing.T) aws.Config {
	t.Helper()
	c, err := config.LoadDefaultConfig(context.Background(),
		config.WithRegion("us-east-1"),
		config.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("local", "local", "")))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func dynamoClient(t *testing.T, endpoint string) *dynamodb.Client {
	return dynamodb.NewFromConfig(awsConfig(t), func(o *dynamodb.Options) {
		o.BaseEndpoint = aws.String(endpoint)
		o.DisableValidateResponseChecksum = true
	})
}

func streamsClient(t *testing.T, endpoint string) *dynamodbstreams.Client {
	return dynamodbstreams.NewFromConfig(awsConfig(t), func(o *dynamodbstreams.Options) {
		o.BaseEndpoint = aws.String(endpoint)
	})
}

// fillResult says what fill wrote: exactly Records stream records.
type fillResult struct {
	Records                   int
	Inserts, Updates, Deletes int
	Took                      time.Duration
}

// fill writes n changes to the table as fast as DynamoDB Local takes them:
// writers in parallel, each sending BatchWriteItem requests of 25 puts and
// deletes of its own items. 60% insert a new donation, 30% rewrite one of
// the writer's live donations with another platform and amount (a MODIFY
// record: a revision counter makes sure the item changes), 10% delete one
// (a REMOVE record). Every write makes exactly one stream record.
func fill(t *testing.T, ddb *dynamodb.Client, n, writers int) fillResult {
	t.Helper()
	ctx := context.Background()
	var res fillResult
	var inserts, updates, deletes, done atomic.Int64
	start := time.Now()
	stopLog := make(chan struct{})
	go func() {
		tick := time.NewTicker(10 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-stopLog:
				return
			case <-tick.C:
				t.Logf("fill: %d of %d records written, %.0f/s", done.Load(), n, float64(done.Load())/time.Since(start).Seconds())
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := range writers {
		share := n / writers
		if w < n%writers {
			share++
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := rand.New(rand.NewPCG(uint64(w), 42))
			var live []string
			next, rev := 0, 0
			item := func(email string) map[string]types.AttributeValue {
				rev++
				return map[string]types.AttributeValue{
					"email":     &types.AttributeValueMemberS{Value: email},
					"donatedAt": &types.AttributeValueMemberS{Value: "2026-01-01T00:00:00"},
					"platform":  &types.AttributeValueMemberS{Value: loadgen.Platforms[rnd.IntN(len(loadgen.Platforms))]},
					"amount":    &types.AttributeValueMemberN{Value: strconv.Itoa(rnd.IntN(500)) + "." + strconv.Itoa(10+rnd.IntN(90))},
					"rev":       &types.AttributeValueMemberN{Value: strconv.Itoa(rev)},
				}
			}
			key := func(email string) map[string]types.AttributeValue {
				return map[string]types.AttributeValue{
					"email":     &types.AttributeValueMemberS{Value: email},
					"donatedAt": &types.AttributeValueMemberS{Value: "2026-01-01T00:00:00"},
				}
			}
			for written := 0; written < share; {
				var reqs []types.WriteRequest
				inBatch := map[string]bool{}
				for len(reqs) < 25 && written+len(reqs) < share {
					p := rnd.IntN(10)
					var pick int
					if len(live) > 0 {
						pick = rnd.IntN(len(live))
					}
					switch {
					case p < 6 || len(live) < 50 || inBatch[live[pick]]:
						next++
						email := fmt.Sprintf("w%d-%d@bench.example", w, next)
						reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: item(email)}})
						live = append(live, email)
						inBatch[email] = true
						inserts.Add(1)
					case p < 9:
						email := live[pick]
						reqs = append(reqs, types.WriteRequest{PutRequest: &types.PutRequest{Item: item(email)}})
						inBatch[email] = true
						updates.Add(1)
					default:
						email := live[pick]
						reqs = append(reqs, types.WriteRequest{DeleteRequest: &types.DeleteRequest{Key: key(email)}})
						live[pick] = live[len(live)-1]
						live = live[:len(live)-1]
						inBatch[email] = true
						deletes.Add(1)
					}
				}
				for len(reqs) > 0 {
					out, err := ddb.BatchWriteItem(ctx, &dynamodb.BatchWriteItemInput{RequestItems: map[string][]types.WriteRequest{tableName: reqs}})
					if err != nil {
						errs <- fmt.Errorf("batch write: %w", err)
						return
					}
					left := out.UnprocessedItems[tableName]
					written += len(reqs) - len(left)
					done.Add(int64(len(reqs) - len(left)))
					reqs = left
				}
			}
		}()
	}
	wg.Wait()
	close(stopLog)
	close(errs)
	for err := range errs {
		t.Fatalf("fill: %v", err)
	}
	res.Records = int(done.Load())
	res.Inserts, res.Updates, res.Deletes = int(inserts.Load()), int(updates.Load()), int(deletes.Load())
	res.Took = time.Since(start)
	return res
}

// streamARN returns the table's stream.
func streamARN(t *testing.T, ddb *dynamodb.Client) string {
	t.Helper()
	out, err := ddb.DescribeTable(context.Background(), &dynamodb.DescribeTableInput{TableName: aws.String(tableName)})
	if err != nil {
		t.Fatal(err)
	}
	return aws.ToString(out.Table.LatestStreamArn)
}
