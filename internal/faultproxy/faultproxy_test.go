package faultproxy

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
	"github.com/aws/smithy-go"
)

const (
	getRecords     = "DynamoDBStreams_20120810.GetRecords"
	describeStream = "DynamoDBStreams_20120810.DescribeStream"
	getItem        = "DynamoDB_20120810.GetItem"
)

// backend stands in for DynamoDB: it answers every request with a
// GetRecords-shaped body naming the operation, and counts what reached it.
type backend struct {
	*httptest.Server
	hits atomic.Int64
}

func newBackend(t *testing.T) *backend {
	b := &backend{}
	b.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/x-amz-json-1.0")
		json.NewEncoder(w).Encode(map[string]any{
			"Records":           []any{},
			"NextShardIterator": "next",
			"Op":                r.Header.Get("X-Amz-Target"),
			"Echo":              string(body),
		})
	}))
	t.Cleanup(b.Close)
	return b
}

func newProxy(t *testing.T, b *backend, cfg Config) (*Proxy, string) {
	t.Helper()
	cfg.Target = b.URL
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(p)
	t.Cleanup(srv.Close)
	return p, srv.URL
}

type answer struct {
	status int
	body   map[string]string
	err    error
}

func call(t *testing.T, url, target, body string) answer {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", target)
	req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	// A fresh connection per call, so a reset never leaks into the next.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	resp, err := c.Do(req)
	if err != nil {
		return answer{err: err}
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	a := answer{status: resp.StatusCode, body: map[string]string{}}
	var m map[string]any
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s: response is not JSON: %q", target, raw)
	}
	for k, v := range m {
		if s, ok := v.(string); ok {
			a.body[k] = s
		}
	}
	return a
}

func TestForwardsUntouchedWithoutFaults(t *testing.T) {
	b := newBackend(t)
	p, url := newProxy(t, b, Config{})
	a := call(t, url, getRecords, `{"ShardIterator":"abc"}`)
	if a.err != nil || a.status != 200 || a.body["Op"] != getRecords || a.body["Echo"] != `{"ShardIterator":"abc"}` {
		t.Fatalf("got %+v, want the backend's answer to the request as sent", a)
	}
	if b.hits.Load() != 1 || p.Counts().Total() != 0 || p.Matched() != 1 {
		t.Fatalf("backend hits %d, faults %v, matched %d", b.hits.Load(), p.Counts(), p.Matched())
	}
}

// TestEachKindFailsTheWayAWSDoes injects every kind at rate 1 and checks
// what the client sees, whether the backend saw the request, and the count.
func TestEachKindFailsTheWayAWSDoes(t *testing.T) {
	cases := []struct {
		kind     Kind
		status   int      // 0: the connection fails
		codes    []string // acceptable __type suffixes
		backend  int64    // requests that reached the backend
		connFail string   // what the client's error says
	}{
		{ServerError, 500, []string{"InternalServerError"}, 0, ""},
		{Throttle, 400, throttleCodes, 0, ""},
		{ExpiredIterator, 400, []string{"ExpiredIteratorException"}, 0, ""},
		{Slow, 200, nil, 1, ""},
		{ResetBefore, 0, nil, 0, "reset"},
		{ResetAfter, 0, nil, 1, "reset"},
	}
	for _, c := range cases {
		t.Run(c.kind.String(), func(t *testing.T) {
			b := newBackend(t)
			p, url := newProxy(t, b, Config{Rates: Rates{c.kind: 1}, MaxDelay: time.Millisecond})
			a := call(t, url, getRecords, `{"ShardIterator":"abc"}`)
			switch {
			case c.status == 0:
				if a.err == nil || !strings.Contains(a.err.Error(), c.connFail) {
					t.Fatalf("got %+v, want a connection error saying %q", a, c.connFail)
				}
			case a.err != nil || a.status != c.status:
				t.Fatalf("got %+v, want status %d", a, c.status)
			case c.codes != nil:
				typ := a.body["__type"]
				code := strings.TrimPrefix(typ, "com.amazonaws.dynamodb.v20120810#")
				if code == typ || !contains(c.codes, code) || a.body["message"] == "" {
					t.Fatalf("error body %v, want __type com.amazonaws.dynamodb.v20120810# one of %v and a message", a.body, c.codes)
				}
			default:
				if a.body["Op"] != getRecords {
					t.Fatalf("got %v, want the backend's answer", a.body)
				}
			}
			if got := b.hits.Load(); got != c.backend {
				t.Fatalf("backend saw %d requests, want %d", got, c.backend)
			}
			want := Counts{}
			want[c.kind] = 1
			if p.Counts() != want {
				t.Fatalf("counts %v, want %v", p.Counts(), want)
			}
		})
	}
}

func TestOnlyMatchingRequestsGetFaults(t *testing.T) {
	b := newBackend(t)
	p, url := newProxy(t, b, Config{Match: Streams, Rates: Rates{ServerError: 1}})
	if a := call(t, url, getItem, `{}`); a.err != nil || a.status != 200 {
		t.Fatalf("a DynamoDB request got %+v, want it forwarded", a)
	}
	if a := call(t, url, describeStream, `{}`); a.status != 500 {
		t.Fatalf("a Streams request got %+v, want a 500", a)
	}
	if p.Matched() != 1 || p.Counts()[ServerError] != 1 {
		t.Fatalf("matched %d, counts %v", p.Matched(), p.Counts())
	}
}

func TestWritesMatchesItemWritesOnly(t *testing.T) {
	for target, want := range map[string]bool{
		"DynamoDB_20120810.PutItem": true, "DynamoDB_20120810.UpdateItem": true, "DynamoDB_20120810.DeleteItem": true,
		"DynamoDB_20120810.GetItem": false, "DynamoDB_20120810.Scan": false, getRecords: false,
	} {
		if Writes(target, nil) != want {
			t.Errorf("Writes(%s) = %v", target, !want)
		}
	}
}

func TestExpiredIteratorOnlyForGetRecords(t *testing.T) {
	b := newBackend(t)
	p, url := newProxy(t, b, Config{Rates: Rates{ExpiredIterator: 1}})
	if a := call(t, url, describeStream, `{}`); a.err != nil || a.status != 200 {
		t.Fatalf("DescribeStream got %+v, want it forwarded", a)
	}
	if p.Counts().Total() != 0 {
		t.Fatalf("counts %v, want none", p.Counts())
	}
}

// TestRatesMixAsConfigured sends many requests with several kinds at
// once: every non-forwarded answer is counted, and each kind comes up
// about as often as its rate says.
func TestRatesMixAsConfigured(t *testing.T) {
	b := newBackend(t)
	rates := Rates{ServerError: 0.1, Throttle: 0.2, ExpiredIterator: 0.1}
	p, url := newProxy(t, b, Config{Rates: rates, Seed: 7})
	const n = 1000
	seen := map[int]int{}
	for range n {
		seen[call(t, url, getRecords, `{}`).status]++
	}
	c := p.Counts()
	if int64(seen[500]) != c[ServerError] || int64(seen[400]) != c[Throttle]+c[ExpiredIterator] || int64(seen[200]) != b.hits.Load() {
		t.Fatalf("answers %v, counts %v, backend %d", seen, c, b.hits.Load())
	}
	for k, r := range rates {
		want := r * n
		if got := float64(c[k]); got < want*0.7 || got > want*1.3 {
			t.Errorf("%s: %v of %d, want about %v", k, got, n, want)
		}
	}
	t.Logf("%d requests: %v", n, c)
}

func TestSlowDelaysUpToMaxDelay(t *testing.T) {
	b := newBackend(t)
	p, url := newProxy(t, b, Config{Rates: Rates{Slow: 1}, MaxDelay: 80 * time.Millisecond, Seed: 3})
	var mu sync.Mutex
	var delays []time.Duration
	p.sleep = func(_ context.Context, d time.Duration) {
		mu.Lock()
		delays = append(delays, d)
		mu.Unlock()
	}
	for range 50 {
		if a := call(t, url, getRecords, `{}`); a.status != 200 {
			t.Fatalf("got %+v", a)
		}
	}
	if len(delays) != 50 {
		t.Fatalf("%d delays for 50 slow requests", len(delays))
	}
	distinct := map[time.Duration]bool{}
	for _, d := range delays {
		if d <= 0 || d > 80*time.Millisecond {
			t.Fatalf("delay %s outside (0, 80ms]", d)
		}
		distinct[d] = true
	}
	if len(distinct) < 10 {
		t.Fatalf("delays are not random: %v", delays)
	}
}

func TestSetRatesEndsFaults(t *testing.T) {
	b := newBackend(t)
	p, url := newProxy(t, b, Config{Rates: Rates{Throttle: 1}})
	if a := call(t, url, getRecords, `{}`); a.status != 400 {
		t.Fatalf("got %+v, want throttling", a)
	}
	if err := p.SetRates(nil); err != nil {
		t.Fatal(err)
	}
	if a := call(t, url, getRecords, `{}`); a.status != 200 {
		t.Fatalf("got %+v after SetRates(nil), want it forwarded", a)
	}
}

func TestRejectsBadConfig(t *testing.T) {
	for name, cfg := range map[string]Config{
		"relative target": {Target: "127.0.0.1:8000"},
		"rates above 1":   {Target: "http://127.0.0.1:1", Rates: Rates{ServerError: 0.6, Throttle: 0.6}},
		"negative rate":   {Target: "http://127.0.0.1:1", Rates: Rates{Slow: -0.1}},
		"unknown kind":    {Target: "http://127.0.0.1:1", Rates: Rates{Kind(42): 0.1}},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// TestSDKSeesTheErrorsAsTyped points the real DynamoDB Streams client at
// the proxy: the injected errors must reach the caller as the SDK's typed
// errors, which is what the consumer branches on.
func TestSDKSeesTheErrorsAsTyped(t *testing.T) {
	b := newBackend(t)
	p, url := newProxy(t, b, Config{})
	c := dynamodbstreams.New(dynamodbstreams.Options{
		Region:           "us-east-1",
		BaseEndpoint:     aws.String(url),
		Credentials:      credentials.NewStaticCredentialsProvider("k", "s", ""),
		RetryMaxAttempts: 1,
	})
	get := func() error {
		_, err := c.GetRecords(context.Background(), &dynamodbstreams.GetRecordsInput{ShardIterator: aws.String("abc")})
		return err
	}

	p.SetRates(Rates{ExpiredIterator: 1})
	var expired *types.ExpiredIteratorException
	if err := get(); !errors.As(err, &expired) {
		t.Fatalf("got %v, want *types.ExpiredIteratorException", err)
	}

	p.SetRates(Rates{Throttle: 1})
	codes := map[string]bool{}
	for range 30 {
		var api smithy.APIError
		if err := get(); !errors.As(err, &api) {
			t.Fatalf("got %v, want an API error", err)
		} else {
			codes[api.ErrorCode()] = true
		}
	}
	for _, code := range throttleCodes {
		if !codes[code] {
			t.Errorf("30 throttles never answered %s: %v", code, codes)
		}
	}
	var limit *types.LimitExceededException
	for range 30 {
		if errors.As(get(), &limit) {
			break
		}
	}
	if limit == nil {
		t.Error("LimitExceededException is not decoded as *types.LimitExceededException")
	}

	p.SetRates(Rates{ServerError: 1})
	var internal *types.InternalServerError
	if err := get(); !errors.As(err, &internal) {
		t.Fatalf("got %v, want *types.InternalServerError", err)
	}

	p.SetRates(nil)
	if err := get(); err != nil {
		t.Fatalf("without faults: %v", err)
	}
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
