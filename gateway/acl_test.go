package gateway_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/gateway"
	"github.com/streamtally/streamtally/internal/testenv"
	"github.com/streamtally/streamtally/publish"
)

// The gateway runs as a user with exactly gateway.ACL's rules, on a server
// and on a cluster, and that user can change nothing.
func TestGatewayRunsAsReadOnlyACLUser(t *testing.T) {
	for _, dep := range []struct {
		name    string
		cluster bool
		addrs   func(testing.TB) []string
	}{
		{"server", false, func(tb testing.TB) []string { return []string{testenv.Redis(tb)} }},
		{"cluster", true, testenv.RedisCluster},
	} {
		t.Run(dep.name, func(t *testing.T) {
			ctx := context.Background()
			addrs := dep.addrs(t)
			// The writer plays the daemon with full rights.
			var admin redis.UniversalClient = redis.NewClient(&redis.Options{Addr: addrs[0]})
			if dep.cluster {
				admin = redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
			}
			t.Cleanup(func() { admin.Close() })

			user := fmt.Sprintf("gw_acl_%d", prefixSeq.Add(1))
			const password = "gateway-acl-test-password"
			prefix := fmt.Sprintf("gwacl%d", prefixSeq.Add(1))
			args := []any{"ACL", "SETUSER", user, "reset", "on", ">" + password}
			for _, r := range gateway.ACL(prefix, dep.cluster) {
				args = append(args, r)
			}
			for _, a := range addrs {
				c := redis.NewClient(&redis.Options{Addr: a})
				if err := c.Do(ctx, args...).Err(); err != nil {
					t.Fatalf("ACL SETUSER on %s: %v", a, err)
				}
				t.Cleanup(func() { c.Do(context.Background(), "ACL", "DELUSER", user); c.Close() })
			}
			limited, err := publish.NewClient(config.Redis{Addr: addrs[0], Addrs: addrs[:1], Cluster: dep.cluster, Username: user, Password: password})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { limited.Close() })

			g := startGatewayFull(t, defaultServe(), 0, limited, prefix, bucketViews)
			g.rdb = admin
			g.apply("a", "x", 1, true)
			s := g.open("a", nil)
			var st state
			s.catchUp(&st, 1)
			g.apply("a", "x", 1, true)
			st.apply(t, s.expect("delta", 2))
			if snap := g.snapshot("a"); !st.equals(snap) {
				t.Fatalf("state %v; snapshot %v", st.n, snap.Measures["n"])
			}

			// A bucketed view's series reads the bucket index too.
			now := time.Now()
			g.applyAt(now, "x", 1, true)
			hs := g.open("h", nil)
			var hst bucketState
			hst.catchUp(t, hs.next, 1)
			g.applyAt(now, "y", 1, true)
			hst.apply(t, hs.expect("delta", 2))
			if got, want := counts(g.series("")), hst.String(); got != want || got == "" {
				t.Fatalf("series %q; stream state %q", got, want)
			}

			k := publish.KeysFor(prefix, "a")
			for what, err := range map[string]error{
				"HSET":    limited.HSet(ctx, k.Meta(), "version", 99).Err(),
				"PUBLISH": limited.Publish(ctx, k.Channel(), "x").Err(),
				"DEL":     limited.Del(ctx, k.Measure("n")).Err(),
			} {
				if err == nil || !strings.Contains(err.Error(), "NOPERM") {
					t.Errorf("%s as the gateway's user: %v, want NOPERM", what, err)
				}
			}
		})
	}
}

// TestReadmeShowsTheGatewayACL keeps the README's line equal to gateway.ACL,
// which the test above checks against Redis.
func TestReadmeShowsTheGatewayACL(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	line := "ACL SETUSER dashboard on >PASSWORD " + strings.Join(gateway.ACL("tally", false), " ") + "\n"
	if !strings.Contains(string(b), line) {
		t.Errorf("README lacks the line\n%s", line)
	}
	cluster := gateway.ACL("tally", true)
	if !strings.Contains(strings.Join(strings.Fields(string(b)), " "), "`"+strings.Join(cluster[len(cluster)-4:], " ")+"`") {
		t.Errorf("README lacks the cluster rules %q", cluster[len(cluster)-4:])
	}
}
