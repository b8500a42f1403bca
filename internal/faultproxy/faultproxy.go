// Package faultproxy is an HTTP reverse proxy for AWS JSON 1.0 services
// (DynamoDB, DynamoDB Streams) that injects faults into chosen operations:
// server errors, throttling, slow responses, connection resets before and
// after the request reaches the backend, and expired shard iterators. Each
// fault is drawn at random at a configured rate and counted by kind, so a
// test can compare what it injected with what the client reports.
package faultproxy

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Kind is a kind of fault.
type Kind int

const (
	// ServerError answers 500 InternalServerError.
	ServerError Kind = iota
	// Throttle answers 400 with LimitExceededException,
	// ProvisionedThroughputExceededException or ThrottlingException.
	Throttle
	// Slow forwards the request after a random delay of up to
	// Config.MaxDelay, so the backend sees it late.
	Slow
	// ResetBefore resets the connection without forwarding the request.
	ResetBefore
	// ResetAfter forwards the request, then resets the connection instead
	// of answering: the backend acted, the client does not know it.
	ResetAfter
	// ExpiredIterator answers 400 ExpiredIteratorException. It applies to
	// GetRecords only; other operations drawing it pass through untouched.
	ExpiredIterator

	numKinds
)

// Kinds lists every kind, in the order Counts.String prints them.
var Kinds = []Kind{ServerError, Throttle, Slow, ResetBefore, ResetAfter, ExpiredIterator}

var kindNames = [numKinds]string{"500", "throttle", "slow", "reset_before", "reset_after", "expired"}

func (k Kind) String() string {
	if k < 0 || k >= numKinds {
		return fmt.Sprintf("Kind(%d)", int(k))
	}
	return kindNames[k]
}

// Rates gives, per kind, the probability that a matching request gets that
// fault. The rates must add up to at most 1; the rest passes through.
type Rates map[Kind]float64

// throttleCodes are the throttling errors DynamoDB and DynamoDB Streams
// answer with; clients must treat all of them alike.
var throttleCodes = []string{"LimitExceededException", "ProvisionedThroughputExceededException", "ThrottlingException"}

// Config configures a Proxy.
type Config struct {
	// Target is the backend's URL, e.g. http://127.0.0.1:8000.
	Target string
	// Match selects the requests that may get faults, by their X-Amz-Target
	// header (e.g. "DynamoDBStreams_20120810.GetRecords") and body. Nil
	// matches every request. Others are always forwarded untouched.
	Match func(target string, body []byte) bool
	// Rates are the faults' initial rates; SetRates changes them.
	Rates Rates
	// MaxDelay bounds the delay of a Slow fault.
	MaxDelay time.Duration
	// Seed makes the sequence of draws repeatable for a given sequence of
	// requests.
	Seed uint64
}

// Streams matches every DynamoDB Streams operation.
func Streams(target string, _ []byte) bool {
	return strings.HasPrefix(target, "DynamoDBStreams_20120810.")
}

// Writes matches DynamoDB's item writes: PutItem, UpdateItem and
// DeleteItem.
func Writes(target string, _ []byte) bool {
	switch target {
	case "DynamoDB_20120810.PutItem", "DynamoDB_20120810.UpdateItem", "DynamoDB_20120810.DeleteItem":
		return true
	}
	return false
}

// Proxy forwards requests to its target, injecting faults into matching
// ones. It is an http.Handler.
type Proxy struct {
	match    func(string, []byte) bool
	maxDelay time.Duration
	forward  *httputil.ReverseProxy
	// sleep waits d or until ctx ends; tests replace it.
	sleep func(ctx context.Context, d time.Duration)

	mu    sync.Mutex
	rnd   *rand.Rand
	rates Rates

	counts  [numKinds]atomic.Int64
	matched atomic.Int64
}

// New returns a proxy to cfg.Target.
func New(cfg Config) (*Proxy, error) {
	u, err := url.Parse(cfg.Target)
	if err != nil || u.Scheme == "" || u.Host == "" {
		return nil, fmt.Errorf("faultproxy: target %q is not an absolute URL", cfg.Target)
	}
	p := &Proxy{
		match:    cfg.Match,
		maxDelay: cfg.MaxDelay,
		rnd:      rand.New(rand.NewPCG(cfg.Seed, cfg.Seed^0x9e3779b97f4a7c15)),
		sleep:    sleepCtx,
		forward: &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
			// Bodies pass through untouched: the SDK checks DynamoDB's
			// CRC32 of the response.
			Transport: &http.Transport{
				Proxy:               nil,
				DisableCompression:  true,
				MaxIdleConnsPerHost: 64,
				IdleConnTimeout:     30 * time.Second,
			},
			// Clients that give up mid-request are routine under faults.
			ErrorLog: log.New(io.Discard, "", 0),
		},
	}
	if p.match == nil {
		p.match = func(string, []byte) bool { return true }
	}
	if err := p.SetRates(cfg.Rates); err != nil {
		return nil, err
	}
	return p, nil
}

// SetRates replaces the rates, e.g. to end the faults.
func (p *Proxy) SetRates(r Rates) error {
	sum := 0.0
	for k, v := range r {
		if k < 0 || k >= numKinds {
			return fmt.Errorf("faultproxy: unknown fault kind %d", int(k))
		}
		if v < 0 {
			return fmt.Errorf("faultproxy: rate of %s is negative (%g)", k, v)
		}
		sum += v
	}
	if sum > 1+1e-9 {
		return fmt.Errorf("faultproxy: rates add up to %g, more than 1", sum)
	}
	p.mu.Lock()
	p.rates = Rates{}
	for k, v := range r {
		p.rates[k] = v
	}
	p.mu.Unlock()
	return nil
}

// Counts are the faults injected so far, per kind.
type Counts [numKinds]int64

// Total is the number of faults of every kind.
func (c Counts) Total() int64 {
	var n int64
	for _, v := range c {
		n += v
	}
	return n
}

// String prints the counts as kind=n pairs, e.g. "500=3 throttle=5 ...".
func (c Counts) String() string {
	parts := make([]string, len(Kinds))
	for i, k := range Kinds {
		parts[i] = fmt.Sprintf("%s=%d", k, c[k])
	}
	return strings.Join(parts, " ")
}

// Counts returns the faults injected so far.
func (p *Proxy) Counts() Counts {
	var c Counts
	for k := range c {
		c[k] = p.counts[k].Load()
	}
	return c
}

// Matched is the number of requests that were candidates for a fault.
func (p *Proxy) Matched() int64 { return p.matched.Load() }

// draw picks the fault for one request, if any.
func (p *Proxy) draw() (Kind, time.Duration, string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	x := p.rnd.Float64()
	for _, k := range Kinds {
		if x < p.rates[k] {
			var delay time.Duration
			if k == Slow && p.maxDelay > 0 {
				delay = time.Duration(p.rnd.Int64N(int64(p.maxDelay))) + 1
			}
			return k, delay, throttleCodes[p.rnd.IntN(len(throttleCodes))], true
		}
		x -= p.rates[k]
	}
	return 0, 0, "", false
}

func (p *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, "faultproxy: read request: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	target := r.Header.Get("X-Amz-Target")
	if !p.match(target, body) {
		p.forward.ServeHTTP(w, r)
		return
	}
	p.matched.Add(1)
	kind, delay, code, ok := p.draw()
	if ok && kind == ExpiredIterator && !strings.HasSuffix(target, ".GetRecords") {
		ok = false
	}
	if !ok {
		p.forward.ServeHTTP(w, r)
		return
	}
	p.counts[kind].Add(1)
	switch kind {
	case ServerError:
		awsError(w, http.StatusInternalServerError, "InternalServerError", "injected server error")
	case Throttle:
		awsError(w, http.StatusBadRequest, code, "injected throttling: rate of requests exceeds the allowed throughput")
	case ExpiredIterator:
		awsError(w, http.StatusBadRequest, "ExpiredIteratorException", "injected: iterator expired")
	case Slow:
		p.sleep(r.Context(), delay)
		p.forward.ServeHTTP(w, r)
	case ResetBefore:
		reset(w)
	case ResetAfter:
		// The backend's answer goes nowhere; only its effect remains.
		p.forward.ServeHTTP(discard{header: http.Header{}}, r)
		reset(w)
	}
}

// awsError writes an error in the AWS JSON 1.0 protocol.
func awsError(w http.ResponseWriter, status int, code, msg string) {
	b, _ := json.Marshal(map[string]string{
		"__type":  "com.amazonaws.dynamodb.v20120810#" + code,
		"message": msg,
	})
	h := w.Header()
	h.Set("Content-Type", "application/x-amz-json-1.0")
	h.Set("X-Amzn-Requestid", fmt.Sprintf("FAULT%016X", rand.Uint64()))
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// reset closes the client's connection with a TCP RST, as a crashing load
// balancer or a dropped NAT entry would, instead of a clean close.
func reset(w http.ResponseWriter) {
	rc := http.NewResponseController(w)
	conn, _, err := rc.Hijack()
	if err != nil {
		// HTTP/2 and the like: the closest thing is to abort the handler,
		// which resets the stream.
		panic(http.ErrAbortHandler)
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

// discard is a ResponseWriter that drops the response.
type discard struct{ header http.Header }

func (d discard) Header() http.Header         { return d.header }
func (d discard) Write(b []byte) (int, error) { return len(b), nil }
func (d discard) WriteHeader(int)             {}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
