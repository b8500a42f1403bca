package testenv_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally/internal/testenv"
)

// TestAppendOnlyKeepsAcknowledgedWritesAcrossCrash writes a key, crashes
// the server and starts it again: with AppendOnly the key is back, without
// it the server comes back empty.
func TestAppendOnlyKeepsAcknowledgedWritesAcrossCrash(t *testing.T) {
	for _, c := range []struct {
		name string
		opts []testenv.RedisOption
		want string
	}{
		{"append-only", []testenv.RedisOption{testenv.AppendOnly()}, "$5 kept!"},
		{"default", nil, "$-1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := testenv.NewRedis(t, c.opts...)
			if got := inline(t, r.Addr(), "SET k kept!"); got != "+OK" {
				t.Fatalf("SET: %q", got)
			}
			r.Stop()
			r.Start()
			if got := inline(t, r.Addr(), "GET k"); got != c.want {
				t.Fatalf("GET after a crash and start: %q, want %q", got, c.want)
			}
		})
	}
}

// TestNewDynamoDBIsPrivateAndStopsWithItsTest starts an instance of the
// test's own: not the shared one, answering while the test runs, gone
// when it ends.
func TestNewDynamoDBIsPrivateAndStopsWithItsTest(t *testing.T) {
	var url string
	t.Run("own", func(t *testing.T) {
		url = testenv.NewDynamoDB(t)
		if url == testenv.DynamoDB(t) {
			t.Fatalf("NewDynamoDB returned the shared instance %s", url)
		}
		resp, err := http.Get(url)
		if err != nil {
			t.Fatalf("while its test runs: %v", err)
		}
		resp.Body.Close()
	})
	c := &http.Client{Timeout: 2 * time.Second}
	if resp, err := c.Get(url); err == nil {
		resp.Body.Close()
		t.Fatalf("%s still answers after its test ended", url)
	}
}

// inline sends one inline command and returns its reply, a bulk string's
// header and body joined by a space.
func inline(t *testing.T, addr, cmd string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, cmd+"\r\n"); err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(c)
	line, err := rd.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	line = strings.TrimRight(line, "\r\n")
	if strings.HasPrefix(line, "$") && line != "$-1" {
		body, err := rd.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		line += " " + strings.TrimRight(body, "\r\n")
	}
	return line
}
