package ddbjson

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddb "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

var capture = flag.Bool("capture", false,
	"rewrite testdata/getrecords and the fuzz seed corpora (here and in aggregate) from what DynamoDB Local sends")

// recorder keeps the body of every GetRecords response it passes on.
type recorder struct {
	mu     sync.Mutex
	bodies [][]byte
}

func (r *recorder) Do(req *http.Request) (*http.Response, error) {
	resp, err := http.DefaultClient.Do(req)
	if err != nil || !strings.HasSuffix(req.Header.Get("X-Amz-Target"), ".GetRecords") {
		return resp, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.bodies = append(r.bodies, b)
	r.mu.Unlock()
	resp.Body = io.NopCloser(bytes.NewReader(b))
	return resp, nil
}

func (r *recorder) last() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.bodies[len(r.bodies)-1]
}

// captureItems are written to the table: every attribute type, values that
// need escaping, numbers at DynamoDB's limits, and the bad data a view must
// set aside. The attribute names match the views FuzzFold folds into.
func captureItems() []map[string]ddb.AttributeValue {
	s := func(v string) ddb.AttributeValue { return &ddb.AttributeValueMemberS{Value: v} }
	n := func(v string) ddb.AttributeValue { return &ddb.AttributeValueMemberN{Value: v} }
	m := func(kv map[string]ddb.AttributeValue) ddb.AttributeValue {
		return &ddb.AttributeValueMemberM{Value: kv}
	}
	item := func(pk string, sk string, kv map[string]ddb.AttributeValue) map[string]ddb.AttributeValue {
		kv["pk"], kv["sk"] = s(pk), n(sk)
		return kv
	}
	donation := func(pk, platform, amount string) map[string]ddb.AttributeValue {
		return item(pk, "1", map[string]ddb.AttributeValue{
			"platform": s(platform), "amount": n(amount), "tier": n("2"),
			"vip":  &ddb.AttributeValueMemberBOOL{Value: true},
			"meta": m(map[string]ddb.AttributeValue{"country": s("DE"), "score": n("7.25")}),
		})
	}
	with := func(it map[string]ddb.AttributeValue, name string, v ddb.AttributeValue) map[string]ddb.AttributeValue {
		if v == nil {
			delete(it, name)
		} else {
			it[name] = v
		}
		return it
	}
	return []map[string]ddb.AttributeValue{
		item("all-types", "1", map[string]ddb.AttributeValue{
			"s":       s("Web"),
			"empty":   s(""),
			"escapes": s("\"quoted\" back\\slash\n\t\r\x01 </script> \u2028"),
			"unicode": s("Zürich ☕ 𝄞 日本"),
			"pipe":    s(`Pipe|Back\slash`),
			"n":       n("-12.50"),
			"b":       &ddb.AttributeValueMemberB{Value: []byte{0, 1, 2, 0xfe, 0xff}},
			"t":       &ddb.AttributeValueMemberBOOL{Value: true},
			"f":       &ddb.AttributeValueMemberBOOL{Value: false},
			"null":    &ddb.AttributeValueMemberNULL{Value: true},
			"ss":      &ddb.AttributeValueMemberSS{Value: []string{"a", "b|c"}},
			"ns":      &ddb.AttributeValueMemberNS{Value: []string{"1", "2.5", "-3E-7"}},
			"bs":      &ddb.AttributeValueMemberBS{Value: [][]byte{{1}, {2, 3}}},
			"l":       &ddb.AttributeValueMemberL{Value: []ddb.AttributeValue{s("x"), n("1"), &ddb.AttributeValueMemberL{}, m(map[string]ddb.AttributeValue{"k": s("v")})}},
			"m":       m(map[string]ddb.AttributeValue{"country": s("FR"), "deeper": m(map[string]ddb.AttributeValue{"score": n("1"), "none": m(map[string]ddb.AttributeValue{})})}),
		}),
		donation("web", "Web", "10.50"),
		donation("pipe", `Pipe|Back\slash`, "0.01"),
		with(donation("huge", "Phone", "99999999999999999999999999999999999999"), "tier", n("9.9999999999999999999999999999999999999E+125")),
		with(donation("tiny", "Mail", "1E-130"), "tier", n("-1E-130")),
		donation("negative", "Web", "-5.125"),
		with(donation("platform-null", "", "1"), "platform", &ddb.AttributeValueMemberNULL{Value: true}),
		with(donation("platform-list", "", "1"), "platform", &ddb.AttributeValueMemberL{Value: []ddb.AttributeValue{s("Web")}}),
		with(donation("platform-map", "", "1"), "platform", m(map[string]ddb.AttributeValue{"name": s("Web")})),
		with(donation("platform-bytes", "", "1"), "platform", &ddb.AttributeValueMemberB{Value: []byte("Web")}),
		with(donation("platform-set", "", "1"), "platform", &ddb.AttributeValueMemberSS{Value: []string{"Web"}}),
		with(donation("platform-bool", "", "1"), "platform", &ddb.AttributeValueMemberBOOL{Value: false}),
		with(donation("amount-string", "Web", "1"), "amount", s("n/a")),
		with(donation("amount-bool", "Web", "1"), "amount", &ddb.AttributeValueMemberBOOL{Value: true}),
		with(donation("no-platform", "", "1"), "platform", nil),
		with(donation("tier-string", "Web", "1"), "tier", s("gold")),
		with(donation("meta-not-map", "Web", "1"), "meta", s("DE")),
	}
}

// TestCaptureFromDynamoDBLocal writes varied items to a table on DynamoDB
// Local, reads its stream, and checks that DecodeRecords reads every
// GetRecords body exactly as the SDK does. With -capture it also keeps the
// bodies and their records as test data and fuzz seeds.
func TestCaptureFromDynamoDBLocal(t *testing.T) {
	ctx := context.Background()
	endpoint := testenv.DynamoDB(t)
	// DynamoDB Local wants a key, any key.
	local := credentials.NewStaticCredentialsProvider("local", "local", "")
	opts := func(o *dynamodb.Options) {
		o.Region, o.Credentials, o.BaseEndpoint = "us-east-1", local, aws.String(endpoint)
	}
	db := dynamodb.New(dynamodb.Options{}, opts)
	rec := &recorder{}
	streams := dynamodbstreams.New(dynamodbstreams.Options{
		Region: "us-east-1", Credentials: local, BaseEndpoint: aws.String(endpoint), HTTPClient: rec,
	})

	table := fmt.Sprintf("codec_capture_%d", time.Now().UnixNano())
	_, err := db.CreateTable(ctx, &dynamodb.CreateTableInput{
		TableName: aws.String(table),
		AttributeDefinitions: []ddb.AttributeDefinition{
			{AttributeName: aws.String("pk"), AttributeType: ddb.ScalarAttributeTypeS},
			{AttributeName: aws.String("sk"), AttributeType: ddb.ScalarAttributeTypeN},
		},
		KeySchema: []ddb.KeySchemaElement{
			{AttributeName: aws.String("pk"), KeyType: ddb.KeyTypeHash},
			{AttributeName: aws.String("sk"), KeyType: ddb.KeyTypeRange},
		},
		BillingMode:         ddb.BillingModePayPerRequest,
		StreamSpecification: &ddb.StreamSpecification{StreamEnabled: aws.Bool(true), StreamViewType: ddb.StreamViewTypeNewAndOldImages},
	})
	if err != nil {
		t.Fatal(err)
	}
	key := func(pk string) map[string]ddb.AttributeValue {
		return map[string]ddb.AttributeValue{"pk": &ddb.AttributeValueMemberS{Value: pk}, "sk": &ddb.AttributeValueMemberN{Value: "1"}}
	}
	for _, it := range captureItems() {
		if _, err := db.PutItem(ctx, &dynamodb.PutItemInput{TableName: aws.String(table), Item: it}); err != nil {
			t.Fatalf("put %v: %v", it["pk"], err)
		}
	}
	for _, u := range []struct{ pk, expr string }{
		{"web", "SET platform = :p"},
		{"web", "SET amount = :a"},
		{"web", "REMOVE tier"},
		{"platform-null", "SET platform = :p"},
		{"amount-string", "SET platform = :p"},
	} {
		values := map[string]ddb.AttributeValue{}
		if strings.Contains(u.expr, ":p") {
			values[":p"] = &ddb.AttributeValueMemberS{Value: "Phone"}
		}
		if strings.Contains(u.expr, ":a") {
			values[":a"] = &ddb.AttributeValueMemberN{Value: "11"}
		}
		in := &dynamodb.UpdateItemInput{TableName: aws.String(table), Key: key(u.pk), UpdateExpression: aws.String(u.expr)}
		if len(values) > 0 {
			in.ExpressionAttributeValues = values
		}
		if _, err := db.UpdateItem(ctx, in); err != nil {
			t.Fatalf("update %s %s: %v", u.pk, u.expr, err)
		}
	}
	for _, pk := range []string{"pipe", "amount-string"} {
		if _, err := db.DeleteItem(ctx, &dynamodb.DeleteItemInput{TableName: aws.String(table), Key: key(pk)}); err != nil {
			t.Fatal(err)
		}
	}

	desc, err := db.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: aws.String(table)})
	if err != nil {
		t.Fatal(err)
	}
	stream, err := streams.DescribeStream(ctx, &dynamodbstreams.DescribeStreamInput{StreamArn: desc.Table.LatestStreamArn})
	if err != nil {
		t.Fatal(err)
	}
	var bodies [][]byte
	events := map[streamtally.Event]int{}
	for _, sh := range stream.StreamDescription.Shards {
		it, err := streams.GetShardIterator(ctx, &dynamodbstreams.GetShardIteratorInput{
			StreamArn: desc.Table.LatestStreamArn, ShardId: sh.ShardId, ShardIteratorType: types.ShardIteratorTypeTrimHorizon,
		})
		if err != nil {
			t.Fatal(err)
		}
		iter := it.ShardIterator
		for iter != nil {
			out, err := streams.GetRecords(ctx, &dynamodbstreams.GetRecordsInput{ShardIterator: iter})
			if err != nil {
				t.Fatal(err)
			}
			if len(out.Records) == 0 {
				break
			}
			body := rec.last()
			bodies = append(bodies, body)
			got, next, err := DecodeRecords(body, aws.ToString(sh.ShardId))
			if err != nil {
				t.Fatalf("DecodeRecords of what DynamoDB Local sent: %v", err)
			}
			want := FromStream(aws.ToString(sh.ShardId), out.Records)
			if next != aws.ToString(out.NextShardIterator) || len(got) != len(want) {
				t.Fatalf("next %q with %d records; the SDK read next %q with %d", next, len(got), aws.ToString(out.NextShardIterator), len(want))
			}
			for i := range got {
				if got[i].Malformed != nil {
					t.Fatalf("record %d malformed: %v", i, got[i].Malformed.Err)
				}
				if !equalRecords(got[i], want[i]) {
					t.Errorf("record %d differs from the SDK's:\n got %+v\nwant %+v", i, got[i], want[i])
				}
				events[got[i].Event]++
			}
			iter = out.NextShardIterator
		}
	}
	wantRecords := len(captureItems()) + 5 + 2
	if n := events[streamtally.Insert] + events[streamtally.Modify] + events[streamtally.Remove]; n != wantRecords || events[streamtally.Modify] != 5 || events[streamtally.Remove] != 2 {
		t.Fatalf("read %v records, want %d: %d inserts, 5 modifies, 2 removes", events, wantRecords, len(captureItems()))
	}
	t.Logf("%d GetRecords bodies, %v records, all decoded as the SDK does", len(bodies), events)
	if *capture {
		writeCapture(t, bodies)
	}
}

// writeCapture keeps the bodies as test data, and each record, plus a
// body of three, as fuzz seeds.
func writeCapture(t *testing.T, bodies [][]byte) {
	dirs := []string{"testdata/getrecords", "testdata/fuzz/FuzzDecodeRecord", "../../aggregate/testdata/fuzz/FuzzFold"}
	for _, d := range dirs {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		old, _ := filepath.Glob(filepath.Join(d, "dynamodb-local-*"))
		for _, f := range old {
			os.Remove(f)
		}
	}
	seed := func(dir, name string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), fmt.Appendf(nil, "go test fuzz v1\n[]byte(%q)\n", b), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	for i, body := range bodies {
		if err := os.WriteFile(filepath.Join(dirs[0], fmt.Sprintf("dynamodb-local-%d.json", i)), body, 0o644); err != nil {
			t.Fatal(err)
		}
		var page struct{ Records []json.RawMessage }
		if err := json.Unmarshal(body, &page); err != nil {
			t.Fatal(err)
		}
		for _, r := range page.Records {
			name := fmt.Sprintf("dynamodb-local-%03d", n)
			seed(dirs[1], name, r)
			seed(dirs[2], name, r)
			n++
		}
		if i == 0 && len(page.Records) >= 3 {
			small, _ := json.Marshal(map[string]any{"Records": page.Records[:3], "NextShardIterator": "next"})
			seed(dirs[1], "dynamodb-local-body", small)
		}
	}
	t.Logf("wrote %d bodies and %d records as seeds", len(bodies), n)
}
