package main

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/internal/testenv"
	"github.com/streamtally/streamtally/publish"
)

// useRedisDeployment points the test's daemons at another Redis,
// described by conf (indented lines of the redis section, without prefix),
// and the test's checks and subscriber at client, which reaches the same
// Redis.
func (e *env) useRedisDeployment(client redis.UniversalClient, conf string) {
	e.t.Helper()
	e.redisConf = strings.TrimRight(conf, "\n")
	e.store = publish.NewRedis(client, e.prefix, e.views)
	switch c := client.(type) {
	case *redis.ClusterClient:
		e.cluster = c
	case *redis.Client:
		e.rdb = c
	default:
		e.t.Fatalf("useRedisDeployment: unexpected client %T", client)
	}
}

// ssubscribe subscribes s to chans on the cluster. A sharded subscription
// lives on the node that owns the channel's slot, so each channel gets a
// connection of its own.
func (e *env) ssubscribe(s *subscriber, chans []string) {
	e.t.Helper()
	for _, ch := range chans {
		ps := e.cluster.SSubscribe(context.Background(), ch)
		e.t.Cleanup(func() { ps.Close() })
		if _, err := ps.Receive(context.Background()); err != nil {
			e.t.Fatalf("SSUBSCRIBE %s: %v", ch, err)
		}
		go s.collect(e.t, ps)
	}
}

// snapshotCommand runs the snapshot subcommand for every view and compares
// its output with the test's own snapshot.
func (e *env) snapshotCommand(cfg string) {
	e.t.Helper()
	for _, v := range e.views {
		out, code := runBinary(e.t, "snapshot", "--config", cfg, "--view", v.Name)
		if code != 0 {
			e.t.Fatalf("snapshot --view %s: exit %d: %s", v.Name, code, out)
		}
		var got publish.Snapshot
		if err := json.Unmarshal([]byte(out), &got); err != nil {
			e.t.Fatalf("snapshot --view %s: %v\n%s", v.Name, err, out)
		}
		want, err := e.store.Snapshot(context.Background(), v)
		if err != nil {
			e.t.Fatal(err)
		}
		if got.Version != want.Version || got.Version == 0 || !maps.EqualFunc(got.Measures, want.Measures, maps.Equal) {
			e.t.Fatalf("snapshot --view %s printed version %d %v; Redis holds version %d %v", v.Name, got.Version, got.Measures, want.Version, want.Measures)
		}
	}
}

// stoppedStats returns the records and batches of a daemon's "stopped" line.
func stoppedStats(d *daemon) string {
	for _, l := range logLines(d.logText(), "stopped") {
		if l["msg"] == "stopped" {
			return fmt.Sprintf("%v records in %v batches", l["records"], l["batches"])
		}
	}
	return "no stopped line"
}

// TestScenarioOnRedisCluster is the core scenario against a three-master
// Redis Cluster, with the views on different masters: counters equal a full
// scan, deltas arrive on sharded pub/sub and sum to the hashes with gapless
// versions, and the snapshot and status subcommands work on the cluster.
func TestScenarioOnRedisCluster(t *testing.T) {
	e := newEnv(t)
	addrs := testenv.RedisCluster(t)
	client := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs})
	t.Cleanup(func() { client.Close() })
	// Several addresses: cluster seeds, no need to say cluster: true.
	e.useRedisDeployment(client, "  addrs: ["+strings.Join(addrs, ", ")+"]")

	masters := map[string]string{}
	for _, v := range e.views {
		m, err := client.MasterForKey(context.Background(), publish.KeysFor(e.prefix, v.Name).Meta())
		if err != nil {
			t.Fatal(err)
		}
		masters[v.Name] = m.Options().Addr
	}
	t.Logf("views on masters %v", masters)
	if len(e.views) < 2 || masters[e.views[0].Name] == masters[e.views[1].Name] {
		t.Fatalf("views %v share a master; the test needs them spread", masters)
	}

	_, cfg := e.scenario(4000, 21)
	e.snapshotCommand(cfg)
	out, code := runBinary(t, "status", "--config", cfg)
	if code != 0 || !strings.Contains(out, "SHARD") {
		t.Fatalf("status on a cluster configuration: exit %d\n%s", code, out)
	}
}

// TestScenarioOverTLSWithACLUser runs the daemon against a TLS-only Redis,
// given as a rediss:// URL with a CA file and a server name, logged in as a
// user with exactly publish.ACL's rights, its password from the
// environment: counters stay exact, deltas sum to the hashes, Redis denies
// nothing, and the snapshot and dlq subcommands work with the same rights.
func TestScenarioOverTLSWithACLUser(t *testing.T) {
	e := newEnv(t)
	srv := testenv.RedisTLS(t)
	admin := redis.NewClient(&redis.Options{Addr: srv.Addr, TLSConfig: srv.ClientConfig()})
	t.Cleanup(func() { admin.Close() })
	user := "st_" + e.prefix
	const password = "e2e-acl-password"
	args := []any{"ACL", "SETUSER", user, "reset", "on", ">" + password}
	for _, r := range publish.ACL(e.prefix, false) {
		args = append(args, r)
	}
	if err := admin.Do(context.Background(), args...).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Do(context.Background(), "ACL", "DELUSER", user) })
	t.Setenv("STREAMTALLY_REDIS_PASSWORD", password)
	e.useRedisDeployment(admin, fmt.Sprintf("  addr: rediss://%s@%s\n  ca_file: %s\n  server_name: %s",
		user, srv.Addr, srv.CA.CertFile, testenv.TLSServerName))

	d, cfg := e.scenario(1500, 22)
	e.snapshotCommand(cfg)
	if out, code := runBinary(t, "dlq", "--config", cfg); code != 0 {
		t.Fatalf("dlq: exit %d\n%s", code, out)
	}

	var denied []string
	for _, entry := range admin.ACLLog(context.Background(), 1000).Val() {
		if entry.Username == user {
			denied = append(denied, entry.Reason+" "+entry.Object)
		}
	}
	if len(denied) > 0 {
		t.Fatalf("Redis refused the daemon's user: %v", denied)
	}
	if strings.Contains(d.logText(), password) {
		t.Fatal("the password is in the daemon's log")
	}
}

// scenario runs one daemon under ops random changes (seeded), checks every
// view against a full scan and the delta stream against the hashes, stops
// the daemon with SIGTERM and returns it with its configuration.
func (e *env) scenario(ops int, seed uint64) (*daemon, string) {
	e.t.Helper()
	e.createTable()
	sub := e.subscribe()
	d := e.start("w1")
	counts := e.load(ops, 4, 0, seed)()
	e.t.Logf("load: %s", counts)
	e.waitExact(60 * time.Second)
	e.checkDeltas(sub)
	if code, took := d.stop(); code != 0 {
		e.t.Fatalf("exit code %d after SIGTERM (%s)", code, took)
	}
	e.t.Logf("daemon: %s", stoppedStats(d))
	return d, e.config("w1", "")
}
