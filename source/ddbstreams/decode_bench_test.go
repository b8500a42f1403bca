package ddbstreams

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/internal/ddbjson"
)

// BenchmarkReadPage is the reader's decode step as it runs: a GetRecords
// call through the SDK's client, whose response (a page of 1000 records
// served from memory) ends up as the fold's input. BenchmarkReadPageSDK is
// the same through the SDK's deserializer and ddbjson.FromStream.
func BenchmarkReadPage(b *testing.B) { benchReadPage(b, true) }

func BenchmarkReadPageSDK(b *testing.B) { benchReadPage(b, false) }

func benchReadPage(b *testing.B, fast bool) {
	body := pageBody(b, 1000)
	c := dynamodbstreams.New(dynamodbstreams.Options{
		Region: "us-east-1", Credentials: aws.AnonymousCredentials{},
		BaseEndpoint: aws.String("http://127.0.0.1:1"), HTTPClient: canned(body),
	})
	in := &dynamodbstreams.GetRecordsInput{ShardIterator: aws.String("it"), Limit: aws.Int32(1000)}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	cpu := processCPU()
	for b.Loop() {
		var recs []streamtally.Record
		if fast {
			page := decodedPage{shard: "shard"}
			if _, err := c.GetRecords(withPage(context.Background(), &page), in, fastDecode); err != nil || !page.done {
				b.Fatal(err)
			}
			recs = page.recs
		} else {
			out, err := c.GetRecords(context.Background(), in)
			if err != nil {
				b.Fatal(err)
			}
			recs = ddbjson.FromStream("shard", out.Records)
		}
		if len(recs) != 1000 {
			b.Fatalf("%d records", len(recs))
		}
	}
	cpu = processCPU() - cpu
	b.ReportMetric(float64(b.N*1000)/b.Elapsed().Seconds(), "records/s")
	// On a busy machine wall time also counts waiting for a CPU; this
	// does not.
	b.ReportMetric(float64(b.N*1000)/cpu.Seconds(), "records/cpu-s")
}

// processCPU is the CPU time (user and system) this process used so far.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type canned []byte

func (c canned) Do(*http.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/x-amz-json-1.0"}},
		Body: io.NopCloser(bytes.NewReader(c)), ContentLength: int64(len(c))}, nil
}

// pageBody is a GetRecords response of n fundraiser records: half inserts,
// a quarter updates, a quarter deletes.
func pageBody(tb testing.TB, n int) []byte {
	tb.Helper()
	s := func(v string) streamtally.Value { return &streamtally.S{Value: v} }
	var b bytes.Buffer
	b.WriteString(`{"NextShardIterator":"arn:aws:dynamodb:eu-west-1:123456789012:table/Donations/stream/2024-01-01T00:00:00.000|1|AAAAAAAAAAHfHLt5","Records":[`)
	platforms := []string{"Web", "Phone", "Facebook", "Mail"}
	for i := range n {
		key := streamtally.Image{"email": s(fmt.Sprintf("donor%d@example.org", i)), "donatedAt": s("2019-08-07T07:26:56")}
		img := func(p, amount string) streamtally.Image {
			return streamtally.Image{"email": key["email"], "donatedAt": key["donatedAt"], "platform": s(p),
				"amount": &streamtally.N{Value: amount}}
		}
		r := streamtally.Record{SequenceNumber: streamtally.Seq(fmt.Sprintf("4%020d", i)), Keys: key, Created: time.Unix(1_700_000_000+int64(i), 0)}
		switch i % 4 {
		case 0, 1:
			r.Event, r.New = streamtally.Insert, img(platforms[i%4], fmt.Sprintf("%d.%02d", i, i%100))
		case 2:
			r.Event, r.Old, r.New = streamtally.Modify, img(platforms[i%4], "10.5"), img(platforms[(i+1)%4], "12.5")
		case 3:
			r.Event, r.Old = streamtally.Remove, img(platforms[i%4], "99.99")
		}
		enc, err := ddbjson.EncodeRecord(&r)
		if err != nil {
			tb.Fatal(err)
		}
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"awsRegion":"eu-west-1","eventID":"%032x","eventSource":"aws:dynamodb","eventVersion":"1.1",`, i)
		b.Write(bytes.Replace(enc[1:], []byte(`"SequenceNumber"`), []byte(`"SizeBytes":251,"StreamViewType":"NEW_AND_OLD_IMAGES","SequenceNumber"`), 1))
	}
	b.WriteString(`]}`)
	return b.Bytes()
}
