package publish

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/internal/testenv"
)

var aclUserSeq atomic.Int64

// aclServer is a Redis deployment to create ACL users on: one server, or
// every node of the cluster, since cluster nodes do not share users.
type aclServer struct {
	name    string
	cluster bool
	addrs   func(testing.TB) []string
}

var aclServers = []aclServer{
	{"server", false, func(tb testing.TB) []string { return []string{testenv.Redis(tb)} }},
	{"cluster", true, testenv.RedisCluster},
}

// aclUser creates a user with rules on every node of s and returns a
// client logged in as that user. The user is deleted when the test ends.
func (s aclServer) aclUser(t *testing.T, rules []string) (redis.UniversalClient, string) {
	t.Helper()
	ctx := context.Background()
	addrs := s.addrs(t)
	user := fmt.Sprintf("st_acl_%d", aclUserSeq.Add(1))
	const password = "acl-test-password"
	args := []any{"ACL", "SETUSER", user, "reset", "on", ">" + password}
	for _, r := range rules {
		args = append(args, r)
	}
	for _, a := range addrs {
		admin := newClient(t, a)
		if err := admin.Do(ctx, args...).Err(); err != nil {
			t.Fatalf("ACL SETUSER on %s: %v", a, err)
		}
		t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", user) })
	}
	c, err := NewClient(config.Redis{Addr: addrs[0], Addrs: addrs[:1], Cluster: s.cluster, Username: user, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, user
}

// denials returns what Redis refused user, on any node of s.
func (s aclServer) denials(t *testing.T, user string) []string {
	t.Helper()
	var out []string
	for _, a := range s.addrs(t) {
		entries, err := newClient(t, a).ACLLog(context.Background(), 1000).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.Username == user {
				out = append(out, e.Reason+" "+e.Object)
			}
		}
	}
	return out
}

// flushScripts empties the script caches, so that the next apply has to
// send the script with EVAL, as after a Redis restart.
func (s aclServer) flushScripts(t *testing.T) {
	t.Helper()
	for _, a := range s.addrs(t) {
		if err := newClient(t, a).ScriptFlush(context.Background()).Err(); err != nil {
			t.Fatal(err)
		}
	}
}

// everyOperation does, under prefix, everything the daemon and the
// snapshot and dlq subcommands send to Redis: fences, applies that add a
// group, add one with a zero sum, remove one and only move the fence, an
// apply on a stale fence, a snapshot, a dead letter added and listed, and
// the readiness check's PING.
func everyOperation(ctx context.Context, c redis.UniversalClient, prefix string) error {
	v := platformView("by_platform")
	store := NewRedis(c, prefix, []*aggregate.View{v})
	if _, err := store.Fences(ctx, "s"); err != nil {
		return err
	}
	for _, d := range []*aggregate.Delta{
		mkDelta(v, "s", "", "1", map[string]gd{"Web": {1, []string{"1.5"}}}),
		mkDelta(v, "s", "1", "2", map[string]gd{"Phone": {1, []string{"0"}}}),
		mkDelta(v, "s", "2", "3", map[string]gd{"Web": {-1, []string{"-1.5"}}}),
		mkDelta(v, "s", "3", "4", map[string]gd{}),
	} {
		if err := store.Apply(ctx, d); err != nil {
			return err
		}
	}
	var moved *aggregate.FenceMovedError
	if err := store.Apply(ctx, mkDelta(v, "s", "1", "5", map[string]gd{"Web": {1, []string{"1"}}})); !errors.As(err, &moved) {
		return fmt.Errorf("apply on a stale fence: %v, want a FenceMovedError", err)
	}
	if _, err := store.Snapshot(ctx, v); err != nil {
		return err
	}
	// A bucketed view: a bucket comes, another comes and goes again (its
	// index entry leaves), and a series is read.
	bv := hourlyView("per_hour", "t", 24*time.Hour)
	bstore := NewRedis(c, prefix, []*aggregate.View{bv})
	bstore.now = func() time.Time { return seriesNow }
	for _, d := range []*aggregate.Delta{
		mkBucketDelta(bv, "s", "", "1", map[string]map[string]gd{hour(-1): {"Web": {1, []string{"1.5"}}}}),
		mkBucketDelta(bv, "s", "1", "2", map[string]map[string]gd{hour(-2): {"Web": {1, []string{"2"}}}}),
		mkBucketDelta(bv, "s", "2", "3", map[string]map[string]gd{hour(-2): {"Web": {-1, []string{"-2"}}}}),
	} {
		if err := bstore.Apply(ctx, d); err != nil {
			return err
		}
	}
	if _, err := bstore.Series(ctx, bv, seriesNow.Add(-24*time.Hour), seriesNow); err != nil {
		return err
	}
	dl := NewDeadLetters(c, prefix, 100)
	bad := item("a", "Web", "US", "1")
	letter := aggregate.Rejection{View: v.Name, Reason: aggregate.Reason{Kind: aggregate.BadSum, Text: "not a number"},
		Record: &streamtally.Record{Shard: "s", SequenceNumber: "6", Event: streamtally.Insert, Keys: keyOf(bad), New: bad}}
	if err := dl.Add(ctx, []aggregate.Rejection{letter}); err != nil {
		return err
	}
	if _, err := dl.List(ctx, "", 10); err != nil {
		return err
	}
	return c.Ping(ctx).Err()
}

// TestACLAllowsTheDaemonUnderItsPrefixOnly logs in as a user with exactly
// ACL's rules: every operation works without a single denial, while keys
// outside the prefix and other commands are refused.
func TestACLAllowsTheDaemonUnderItsPrefixOnly(t *testing.T) {
	for _, s := range aclServers {
		t.Run(s.name, func(t *testing.T) {
			ctx := context.Background()
			prefix := testPrefix(t)
			c, user := s.aclUser(t, ACL(prefix, s.cluster))
			s.flushScripts(t)
			if err := everyOperation(ctx, c, prefix); err != nil {
				t.Fatalf("as %s: %v", user, err)
			}
			if d := s.denials(t, user); len(d) > 0 {
				t.Fatalf("Redis refused %s: %v", user, d)
			}

			v := platformView("by_platform")
			other := KeysFor(prefix+"x", v.Name)
			elsewhere := NewRedis(c, prefix+"x", []*aggregate.View{v})
			refused := []struct {
				what, denial string
				err          error
			}{
				{"HSET outside the prefix", "key elsewhere:{by_platform}:amount", c.HSet(ctx, "elsewhere:{by_platform}:amount", "Web", "1").Err()},
				{"apply under a longer prefix", "key " + other.Meta(), elsewhere.Apply(ctx, mkDelta(v, "s", "", "1", map[string]gd{"Web": {1, []string{"1"}}}))},
				{"snapshot under a longer prefix", "key " + other.Measure("amount"), func() error { _, err := elsewhere.Snapshot(ctx, v); return err }()},
				{"a command not in the ACL", "command del", c.Del(ctx, KeysFor(prefix, v.Name).Meta()).Err()},
			}
			denied := s.denials(t, user)
			for _, r := range refused {
				// A refusal inside MULTI surfaces as EXECABORT; the ACL
				// log says what was refused.
				if r.err == nil || !slices.Contains(denied, r.denial) {
					t.Errorf("%s: error %v; want an error and %q among Redis's denials %q", r.what, r.err, r.denial, denied)
				}
			}
		})
	}
}

// TestACLRulesAreAllNeeded drops each command rule in turn: then an
// operation must fail, or Redis must log a denial (the cluster client
// works on without COMMAND, but asks for it).
func TestACLRulesAreAllNeeded(t *testing.T) {
	for _, s := range aclServers {
		t.Run(s.name, func(t *testing.T) {
			prefix := testPrefix(t)
			rules := ACL(prefix, s.cluster)
			for i, rule := range rules {
				if !strings.HasPrefix(rule, "+") {
					continue
				}
				t.Run(rule, func(t *testing.T) {
					c, user := s.aclUser(t, slices.Delete(slices.Clone(rules), i, i+1))
					s.flushScripts(t)
					err := everyOperation(context.Background(), c, prefix)
					if d := s.denials(t, user); err == nil && len(d) == 0 {
						t.Fatalf("without %s every operation works and Redis denied nothing: the rule is not needed", rule)
					}
				})
			}
		})
	}
}

// TestReadmeShowsTheACL keeps the README's ACL SETUSER lines equal to ACL,
// which the tests above check against Redis.
func TestReadmeShowsTheACL(t *testing.T) {
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, cluster := range []bool{false, true} {
		line := "ACL SETUSER streamtally on >PASSWORD " + strings.Join(ACL("tally", cluster), " ") + "\n"
		if !strings.Contains(string(b), line) {
			t.Errorf("README lacks the line\n%s", line)
		}
	}
}
