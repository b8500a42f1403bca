package testenv_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally/internal/testenv"
)

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestDynamoDBListTables(t *testing.T) {
	endpoint := testenv.DynamoDB(t)
	if again := testenv.DynamoDB(t); again != endpoint {
		t.Fatalf("second call started another instance: %s != %s", again, endpoint)
	}

	req, err := http.NewRequest(http.MethodPost, endpoint, strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Amz-Target", "DynamoDB_20120810.ListTables")
	req.Header.Set("Content-Type", "application/x-amz-json-1.0")
	// DynamoDB Local requires a well-formed SigV4 header but does not check
	// the signature.
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential=local/20240101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=x")
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("ListTables: status %d, body %s", resp.StatusCode, body)
	}
	var out map[string]json.RawMessage
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("ListTables: bad JSON %q: %v", body, err)
	}
	if _, ok := out["TableNames"]; !ok {
		t.Fatalf("ListTables: no TableNames in %s", body)
	}
}

func TestSharedRedis(t *testing.T) {
	addr := testenv.Redis(t)
	if again := testenv.Redis(t); again != addr {
		t.Fatalf("second call started another instance: %s != %s", again, addr)
	}
	if err := ping(addr); err != nil {
		t.Fatal(err)
	}
}

func TestNewRedisStopStart(t *testing.T) {
	r := testenv.NewRedis(t)
	addr := r.Addr()
	if addr == testenv.Redis(t) {
		t.Fatalf("NewRedis returned the shared instance %s", addr)
	}
	if err := ping(addr); err != nil {
		t.Fatalf("after NewRedis: %v", err)
	}

	r.Stop()
	if err := ping(addr); err == nil {
		t.Fatal("PING succeeded after Stop")
	}
	r.Stop() // stopping twice is harmless

	r.Start()
	if r.Addr() != addr {
		t.Fatalf("Start moved the server from %s to %s", addr, r.Addr())
	}
	if err := ping(addr); err != nil {
		t.Fatalf("after Start: %v", err)
	}
}

func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(c, "PING\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING %s: unexpected reply %q", addr, line)
	}
	return nil
}
