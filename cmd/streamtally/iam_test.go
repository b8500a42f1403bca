package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/streamtally/streamtally/internal/iamcheck"
)

// The IAM check: every DynamoDB and DynamoDB Streams request the streamtally
// binary makes in the end-to-end tests goes through a recording reverse
// proxy (newEnv points source.endpoint, and with it checkpoint.endpoint, at
// it). Each request's X-Amz-Target names the operation; its TableName or
// StreamArn says which resource it touches. After all tests passed,
// TestMain compares the recorded operations with deploy/ecs/iam-policy.json
// and with the task role of deploy/ecs/cloudformation.yaml, per resource:
// an operation the policy does not grant fails the test binary, and so does
// a grant nothing called (the latter only when the whole package ran).
//
// The tests' own calls (creating tables, writing items, scanning to
// check) use e.ddb, built from the direct endpoint, and are not recorded.

// Test resources are named so their class shows: the harness names data
// tables Donations_<test> and sets checkpoint.app, which names the lease
// table, to app_<test>.
const (
	dataTablePrefix  = "Donations_"
	leaseTablePrefix = "app_"
)

type awsCall struct {
	class  iamcheck.Class
	action string // dynamodb:<Operation>
}

var ddbRecorder struct {
	once   sync.Once
	target string
	url    string
	err    error

	mu           sync.Mutex
	calls        map[awsCall]int
	unclassified map[string]int
	total        int
}

// recordingEndpoint returns the URL of the recording proxy to the DynamoDB
// Local at target, starting it on first use: one per test binary.
func recordingEndpoint(t testing.TB, target string) string {
	t.Helper()
	r := &ddbRecorder
	r.once.Do(func() {
		r.target = target
		u, err := url.Parse(target)
		if err != nil {
			r.err = err
			return
		}
		proxy := &httputil.ReverseProxy{
			Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(u) },
			// Pass bodies through untouched: the SDK checks the CRC32 of
			// DynamoDB responses.
			Transport: &http.Transport{
				Proxy:               nil,
				DisableCompression:  true,
				MaxIdleConnsPerHost: 64,
				IdleConnTimeout:     30 * time.Second,
			},
			// A daemon killed mid-request is routine here.
			ErrorLog: log.New(io.Discard, "", 0),
		}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			body, err := io.ReadAll(req.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			req.Body = io.NopCloser(bytes.NewReader(body))
			record(req.Header.Get("X-Amz-Target"), body)
			proxy.ServeHTTP(w, req)
		}))
		r.url = srv.URL
		r.calls = map[awsCall]int{}
		r.unclassified = map[string]int{}
	})
	if r.err != nil {
		t.Fatalf("recording proxy: %v", r.err)
	}
	if target != r.target {
		t.Fatalf("recording proxy forwards to %s, asked for %s", r.target, target)
	}
	return r.url
}

func record(target string, body []byte) {
	class, action, err := classify(target, body)
	r := &ddbRecorder
	r.mu.Lock()
	defer r.mu.Unlock()
	r.total++
	if err != nil {
		r.unclassified[err.Error()]++
		return
	}
	r.calls[awsCall{class, action}]++
}

// classify maps a request to the IAM action it needs and the class of the
// resource IAM checks it against.
func classify(target string, body []byte) (iamcheck.Class, string, error) {
	service, op, ok := strings.Cut(target, ".")
	if !ok || op == "" {
		return "", "", fmt.Errorf("request without an X-Amz-Target operation (%q)", target)
	}
	action := "dynamodb:" + op
	var in struct {
		TableName string
		StreamArn string
	}
	if err := json.Unmarshal(body, &in); err != nil {
		return "", "", fmt.Errorf("%s: body is not JSON: %v", target, err)
	}
	switch service {
	case "DynamoDB_20120810":
		if in.TableName == "" {
			return "", "", fmt.Errorf("%s without a TableName: classify it in iam_test.go", target)
		}
		c, err := tableClass(in.TableName)
		if err != nil {
			return "", "", fmt.Errorf("%s: %w", target, err)
		}
		return c, action, nil
	case "DynamoDBStreams_20120810":
		switch {
		case in.StreamArn != "":
			m := streamARN.FindStringSubmatch(in.StreamArn)
			if m == nil {
				return "", "", fmt.Errorf("%s: stream ARN %q", target, in.StreamArn)
			}
			if c, err := tableClass(m[1]); err != nil || c != iamcheck.SourceTable {
				return "", "", fmt.Errorf("%s: stream of table %q, not of a data table", target, m[1])
			}
			return iamcheck.SourceStream, action, nil
		case op == "GetRecords":
			// Only an iterator in the request; IAM checks it against the
			// stream the iterator belongs to.
			return iamcheck.SourceStream, action, nil
		case op == "ListStreams":
			return iamcheck.AnyResource, action, nil
		}
		return "", "", fmt.Errorf("%s without a StreamArn: classify it in iam_test.go", target)
	}
	return "", "", fmt.Errorf("operation %s of an unknown service", target)
}

var streamARN = regexp.MustCompile(`^arn:[^:]+:dynamodb:[^:]*:[^:]*:table/([^/]+)/stream/[^/]+$`)

func tableClass(name string) (iamcheck.Class, error) {
	switch {
	case strings.HasPrefix(name, dataTablePrefix):
		return iamcheck.SourceTable, nil
	case strings.HasPrefix(name, leaseTablePrefix):
		return iamcheck.LeaseTable, nil
	}
	return "", fmt.Errorf("table %q is neither a data table (%s...) nor a lease table (%s...)", name, dataTablePrefix, leaseTablePrefix)
}

// checkIAM runs after every test has passed. It returns the exit code.
func checkIAM(stdout, stderr io.Writer) int {
	r := &ddbRecorder
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.total == 0 {
		return 0 // no end-to-end test ran
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "--- FAIL: IAM check (TestMain, cmd/streamtally/iam_test.go)\n"+format, a...)
		fmt.Fprintln(stderr, "FAIL")
		return 1
	}
	if len(r.unclassified) > 0 {
		var lines []string
		for what, n := range r.unclassified {
			lines = append(lines, fmt.Sprintf("    %s (%d)", what, n))
		}
		sort.Strings(lines)
		return fail("    requests the check cannot map to an IAM action and resource:\n%s\n", strings.Join(lines, "\n"))
	}
	observed := iamcheck.Grants{}
	for c := range r.calls {
		observed.Add(c.class, c.action)
	}

	// A grant can only be called "never used" when every test ran.
	whole := true
	for _, name := range []string{"test.run", "test.skip"} {
		if f := flag.Lookup(name); f != nil && f.Value.String() != "" {
			whole = false
		}
	}

	problems := iamProblems(observed, whole)
	if len(problems) > 0 {
		return fail("%s\n    observed (%d requests):\n%s", strings.Join(problems, "\n"), r.total, indent(summary(r.calls)))
	}
	if testing.Verbose() {
		note := ""
		if !whole {
			note = " (a subset of the tests ran: unused grants not checked)"
		}
		fmt.Fprintf(stdout, "IAM check: %d DynamoDB requests of the binary, all granted by iam-policy.json and the template%s:\n%s",
			r.total, note, indent(summary(r.calls)))
	}
	return 0
}

// iamProblems compares the observed calls with the task role's policy in
// both deploy/ecs files, per resource class. Grants never called count only
// when whole (every test ran).
func iamProblems(observed iamcheck.Grants, whole bool) []string {
	var problems []string
	for _, file := range []struct {
		name, path string
		load       func(string) (iamcheck.Grants, error)
	}{
		{"deploy/ecs/iam-policy.json", "../../deploy/ecs/iam-policy.json", iamcheck.LoadPolicy},
		{"deploy/ecs/cloudformation.yaml (task role)", "../../deploy/ecs/cloudformation.yaml", iamcheck.TaskRoleGrants},
	} {
		granted, err := file.load(file.path)
		if err != nil {
			problems = append(problems, fmt.Sprintf("    %s: %v", file.name, err))
			continue
		}
		missing, unused := iamcheck.Diff(observed, granted)
		for _, m := range missing {
			problems = append(problems, fmt.Sprintf("    %s does not grant %s, which the binary calls", file.name, m))
		}
		if whole {
			for _, u := range unused {
				problems = append(problems, fmt.Sprintf("    %s grants %s, which the binary never called", file.name, u))
			}
		}
	}
	return problems
}

func indent(s string) string {
	return "        " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n        ") + "\n"
}

// summary lists the observed calls per class and action, with counts.
func summary(calls map[awsCall]int) string {
	keys := make([]awsCall, 0, len(calls))
	for k := range calls {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].class != keys[j].class {
			return keys[i].class < keys[j].class
		}
		return keys[i].action < keys[j].action
	})
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%-14s %-27s %6d\n", k.class, k.action, calls[k])
	}
	return b.String()
}

func TestIAMClassifiesRequests(t *testing.T) {
	const arn = "arn:aws:dynamodb:ddblocal:000000000000:table/Donations_x1/stream/2026-01-01T00:00:00.000"
	for _, c := range []struct {
		target, body string
		class        iamcheck.Class
		action       string
	}{
		{"DynamoDB_20120810.DescribeTable", `{"TableName":"Donations_x1"}`, iamcheck.SourceTable, "dynamodb:DescribeTable"},
		{"DynamoDB_20120810.DescribeTable", `{"TableName":"app_x1"}`, iamcheck.LeaseTable, "dynamodb:DescribeTable"},
		{"DynamoDB_20120810.UpdateItem", `{"TableName":"app_x1","Key":{}}`, iamcheck.LeaseTable, "dynamodb:UpdateItem"},
		{"DynamoDBStreams_20120810.DescribeStream", `{"StreamArn":"` + arn + `","Limit":1}`, iamcheck.SourceStream, "dynamodb:DescribeStream"},
		{"DynamoDBStreams_20120810.GetShardIterator", `{"StreamArn":"` + arn + `","ShardId":"s"}`, iamcheck.SourceStream, "dynamodb:GetShardIterator"},
		{"DynamoDBStreams_20120810.GetRecords", `{"ShardIterator":"abc"}`, iamcheck.SourceStream, "dynamodb:GetRecords"},
		{"DynamoDBStreams_20120810.ListStreams", `{"TableName":"Donations_x1"}`, iamcheck.AnyResource, "dynamodb:ListStreams"},
	} {
		class, action, err := classify(c.target, []byte(c.body))
		if err != nil || class != c.class || action != c.action {
			t.Errorf("%s %s: %q %q %v, want %q %q", c.target, c.body, class, action, err, c.class, c.action)
		}
	}
	for _, c := range [][2]string{
		{"", `{}`},
		{"DynamoDB_20120810.ListTables", `{}`},
		{"DynamoDB_20120810.GetItem", `{"TableName":"Other"}`},
		{"DynamoDBStreams_20120810.DescribeStream", `{"StreamArn":"arn:aws:dynamodb:r:1:table/app_x/stream/t"}`},
		{"Kinesis_20131202.GetRecords", `{}`},
	} {
		if class, action, err := classify(c[0], []byte(c[1])); err == nil {
			t.Errorf("%s %s: classified as %q %q", c[0], c[1], class, action)
		}
	}
}

// TestIAMCheckNamesMissingAndUnusedGrants feeds the comparison a call the
// policy lacks and leaves out one it grants.
func TestIAMCheckNamesMissingAndUnusedGrants(t *testing.T) {
	observed, err := iamcheck.LoadPolicy("../../deploy/ecs/iam-policy.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(iamProblems(observed, true)) != 0 {
		t.Fatalf("exactly the granted calls: %v", iamProblems(observed, true))
	}
	observed[iamcheck.LeaseTable] = slices.DeleteFunc(slices.Clone(observed[iamcheck.LeaseTable]), func(a string) bool { return a == "dynamodb:DeleteItem" })
	observed.Add(iamcheck.SourceTable, "dynamodb:Query")
	got := strings.Join(iamProblems(observed, true), "\n")
	for _, want := range []string{
		"deploy/ecs/iam-policy.json does not grant dynamodb:Query on the source table, which the binary calls",
		"deploy/ecs/iam-policy.json grants dynamodb:DeleteItem on the lease table, which the binary never called",
		"deploy/ecs/cloudformation.yaml (task role) does not grant dynamodb:Query on the source table",
		"deploy/ecs/cloudformation.yaml (task role) grants dynamodb:DeleteItem on the lease table",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("problems lack %q:\n%s", want, got)
		}
	}
	if got := iamProblems(observed, false); len(got) != 2 {
		t.Errorf("with a subset of the tests, only missing grants count: %v", got)
	}
}
