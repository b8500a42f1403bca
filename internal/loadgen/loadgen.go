// Package loadgen creates the fundraiser's Donations table, writes a stream
// of donations to it (inserts, platform moves, amount changes, deletes) and
// recomputes views from a full scan. The demo and the tests share it.
package loadgen

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/internal/ddbjson"
)

// Platforms donations come from. The last one holds the characters the
// group key escapes.
var Platforms = []string{"Web", "Phone", "Facebook", "Mail", `Pipe|Back\slash`}

// CreateTable creates a Donations-like table (email, donatedAt) with a
// NEW_AND_OLD_IMAGES stream, unless it exists, and waits until it is active.
func CreateTable(ctx context.Context, ddb *dynamodb.Client, table string) error {
	_, err := ddb.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName: aws.String(table),
		AttributeDefinitions: []types.AttributeDefinition{
			{AttributeName: aws.String("email"), AttributeType: types.ScalarAttributeTypeS},
			{AttributeName: aws.String("donatedAt"), AttributeType: types.ScalarAttributeTypeS},
		},
		KeySchema: []types.KeySchemaElement{
			{AttributeName: aws.String("email"), KeyType: types.KeyTypeHash},
			{AttributeName: aws.String("donatedAt"), KeyType: types.KeyTypeRange},
		},
		BillingMode: types.BillingModePayPerRequest,
		StreamSpecification: &types.StreamSpecification{
			StreamEnabled: aws.Bool(true), StreamViewType: types.StreamViewTypeNewAndOldImages,
		},
	})
	if err != nil {
		var inUse *types.ResourceInUseException
		if !asErr(err, &inUse) {
			return fmt.Errorf("create table %s: %w", table, err)
		}
	}
	return dynamodb.NewTableExistsWaiter(ddb).Wait(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)}, time.Minute)
}

// Options shape a load.
type Options struct {
	Ops     int     // writes in all
	Writers int     // concurrent writers
	Rate    int     // writes per second across writers; 0 = as fast as possible
	Seed    uint64  // for repeatable runs
	BadRate float64 // share of inserts with a bad record: no platform, a platform that is a list, or an amount that is a string
	Huge    bool    // now and then write amounts near 2^62 cents, beyond float precision
}

// Counts says what a load did.
type Counts struct {
	Inserts, Moves, Amounts, Deletes, Bad atomic.Int64

	mu   sync.Mutex
	dead []string // emails of items inserted with bad data
}

// DeadLetterEmails returns the emails of the items inserted with data a
// view must set aside as a dead letter (a platform that is a list, an
// amount that is a string), as opposed to items merely outside a view (no
// platform).
func (c *Counts) DeadLetterEmails() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.dead...)
}

func (c *Counts) String() string {
	return fmt.Sprintf("%d inserts, %d platform moves, %d amount changes, %d deletes (%d bad records)",
		c.Inserts.Load(), c.Moves.Load(), c.Amounts.Load(), c.Deletes.Load(), c.Bad.Load())
}

// Run writes opts.Ops random changes. Each writer owns its own emails, so
// it knows which items exist without reading.
func Run(ctx context.Context, ddb *dynamodb.Client, table string, opts Options) (*Counts, error) {
	if opts.Writers < 1 {
		opts.Writers = 1
	}
	var counts Counts
	var tick <-chan time.Time
	if opts.Rate > 0 {
		t := time.NewTicker(time.Second / time.Duration(opts.Rate))
		defer t.Stop()
		tick = t.C
	}
	var wg sync.WaitGroup
	errs := make(chan error, opts.Writers)
	var next atomic.Int64
	for w := 0; w < opts.Writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g := &writer{ddb: ddb, table: table, id: w, rnd: rand.New(rand.NewPCG(opts.Seed, uint64(w))), opts: opts, counts: &counts}
			for next.Add(1) <= int64(opts.Ops) {
				if tick != nil {
					select {
					case <-ctx.Done():
						errs <- ctx.Err()
						return
					case <-tick:
					}
				}
				if err := g.step(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return &counts, <-errs
}

type item struct{ email, at string }

type writer struct {
	ddb    *dynamodb.Client
	table  string
	id     int
	rnd    *rand.Rand
	opts   Options
	counts *Counts
	items  []item
	n      int
}

func (g *writer) step(ctx context.Context) error {
	p := g.rnd.Float64()
	switch {
	case len(g.items) < 5 || p < 0.45:
		return g.insert(ctx)
	case p < 0.65:
		g.counts.Moves.Add(1)
		return g.update(ctx, "platform", &types.AttributeValueMemberS{Value: g.platform()})
	case p < 0.85:
		g.counts.Amounts.Add(1)
		return g.update(ctx, "amount", &types.AttributeValueMemberN{Value: g.amount()})
	default:
		g.counts.Deletes.Add(1)
		i := g.rnd.IntN(len(g.items))
		it := g.items[i]
		g.items[i] = g.items[len(g.items)-1]
		g.items = g.items[:len(g.items)-1]
		_, err := g.ddb.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(g.table), Key: key(it)})
		return wrap("delete", err)
	}
}

func (g *writer) insert(ctx context.Context) error {
	g.n++
	it := item{
		email: fmt.Sprintf("donor%d-%d@example.org", g.id, g.n),
		at:    time.Date(2019, 8, 7, 7, 0, 0, 0, time.UTC).Add(time.Duration(g.n) * time.Second).Format("2006-01-02T15:04:05"),
	}
	av := map[string]types.AttributeValue{
		"email":     &types.AttributeValueMemberS{Value: it.email},
		"donatedAt": &types.AttributeValueMemberS{Value: it.at},
		"platform":  &types.AttributeValueMemberS{Value: g.platform()},
		"amount":    &types.AttributeValueMemberN{Value: g.amount()},
	}
	if g.opts.BadRate > 0 && g.rnd.Float64() < g.opts.BadRate {
		g.counts.Bad.Add(1)
		switch g.rnd.IntN(3) {
		case 0:
			delete(av, "platform")
		case 1:
			av["platform"] = &types.AttributeValueMemberL{Value: []types.AttributeValue{av["platform"]}}
		default:
			av["amount"] = &types.AttributeValueMemberS{Value: "n/a"}
		}
		if _, inView := av["platform"]; inView {
			g.counts.mu.Lock()
			g.counts.dead = append(g.counts.dead, it.email)
			g.counts.mu.Unlock()
		}
	}
	g.counts.Inserts.Add(1)
	g.items = append(g.items, it)
	_, err := g.ddb.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(g.table), Item: av})
	return wrap("put", err)
}

func (g *writer) update(ctx context.Context, attr string, v types.AttributeValue) error {
	it := g.items[g.rnd.IntN(len(g.items))]
	_, err := g.ddb.UpdateItem(ctx, &dynamodb.UpdateItemInput{
		TableName:                 aws.String(g.table),
		Key:                       key(it),
		UpdateExpression:          aws.String("SET #a = :v"),
		ExpressionAttributeNames:  map[string]string{"#a": attr},
		ExpressionAttributeValues: map[string]types.AttributeValue{":v": v},
	})
	return wrap("update", err)
}

func (g *writer) platform() string { return Platforms[g.rnd.IntN(len(Platforms))] }

// amount is a decimal with cents, sometimes large, so that sums exercise
// exact arithmetic beyond float precision.
func (g *writer) amount() string {
	cents := g.rnd.Int64N(100_000)
	if g.opts.Huge && g.rnd.IntN(50) == 0 {
		cents = g.rnd.Int64N(1 << 62)
	}
	s := strconv.FormatInt(cents, 10)
	for len(s) < 3 {
		s = "0" + s
	}
	return s[:len(s)-2] + "." + s[len(s)-2:]
}

func key(it item) map[string]types.AttributeValue {
	return map[string]types.AttributeValue{
		"email":     &types.AttributeValueMemberS{Value: it.email},
		"donatedAt": &types.AttributeValueMemberS{Value: it.at},
	}
}

func wrap(op string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	return nil
}

// Scan reads every item of table, converted to the stream's image type.
func Scan(ctx context.Context, ddb *dynamodb.Client, table string) ([]streamtally.Image, error) {
	var out []streamtally.Image
	p := dynamodb.NewScanPaginator(ddb, &dynamodb.ScanInput{TableName: aws.String(table), ConsistentRead: aws.Bool(true)})
	for p.HasMorePages() {
		page, err := p.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("scan %s: %w", table, err)
		}
		for _, it := range page.Items {
			out = append(out, ddbjson.FromItem(it))
		}
	}
	return out, nil
}
