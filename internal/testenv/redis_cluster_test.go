package testenv_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/internal/testenv"
)

func TestRedisClusterSpreadsSlotsOverThreeMasters(t *testing.T) {
	addrs := testenv.RedisCluster(t)
	if again := testenv.RedisCluster(t); !slices.Equal(again, addrs) {
		t.Fatalf("second call started another cluster: %v != %v", again, addrs)
	}
	if len(addrs) != 3 {
		t.Fatalf("%d addresses, want 3: %v", len(addrs), addrs)
	}
	ctx := context.Background()
	c := redis.NewClusterClient(&redis.ClusterOptions{Addrs: addrs[:1]})
	defer c.Close()

	var mu sync.Mutex
	var masters []string
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		info, err := m.ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			t.Errorf("%s: %s", m.Options().Addr, info)
		}
		mu.Lock()
		masters = append(masters, m.Options().Addr)
		mu.Unlock()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(masters)
	if want := slices.Sorted(slices.Values(addrs)); !slices.Equal(masters, want) {
		t.Fatalf("masters %v, want %v", masters, want)
	}

	// Keys with different hash tags land on different nodes, and every
	// node serves its own.
	owners := map[string]bool{}
	for _, tag := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		key := "testenv:{" + tag + "}"
		if err := c.Set(ctx, key, tag, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", key, err)
		}
		m, err := c.MasterForKey(ctx, key)
		if err != nil {
			t.Fatal(err)
		}
		owners[m.Options().Addr] = true
	}
	if len(owners) < 2 {
		t.Fatalf("8 hash tags all landed on %v", owners)
	}
}

func TestRedisTLSAcceptsOnlyTrustedTLS(t *testing.T) {
	srv := testenv.RedisTLS(t)
	if again := testenv.RedisTLS(t); again != srv {
		t.Fatal("second call started another server")
	}
	if err := ping(srv.Addr); err == nil {
		t.Fatal("plain-text PING answered; the server must speak TLS only")
	}

	dial := func(conf *tls.Config) error {
		c, err := tls.Dial("tcp", srv.Addr, conf)
		if err != nil {
			return err
		}
		defer c.Close()
		r := redis.NewClient(&redis.Options{Addr: srv.Addr, TLSConfig: conf, MaxRetries: -1})
		defer r.Close()
		return r.Ping(context.Background()).Err()
	}
	withCA := func(caFile string) *tls.Config {
		b, err := os.ReadFile(caFile)
		if err != nil {
			t.Fatal(err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(b) {
			t.Fatalf("%s holds no certificate", caFile)
		}
		return &tls.Config{RootCAs: pool}
	}
	clientCert := func(ca *testenv.CA) tls.Certificate {
		cf, kf := ca.Issue(t, "client")
		c, err := tls.LoadX509KeyPair(cf, kf)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}

	if err := dial(srv.ClientConfig()); err != nil {
		t.Fatalf("trusted CA, default server name: %v", err)
	}
	byName := withCA(srv.CA.CertFile)
	byName.ServerName = testenv.TLSServerName
	if err := dial(byName); err != nil {
		t.Fatalf("trusted CA, server name %s: %v", testenv.TLSServerName, err)
	}
	good := srv.ClientConfig()
	good.Certificates = []tls.Certificate{clientCert(srv.CA)}
	if err := dial(good); err != nil {
		t.Fatalf("client certificate of the server's CA: %v", err)
	}

	other := testenv.NewCA(t)
	wrongName := srv.ClientConfig()
	wrongName.ServerName = "other.streamtally.test"
	foreignClient := srv.ClientConfig()
	foreignClient.Certificates = []tls.Certificate{clientCert(other)}
	for name, conf := range map[string]*tls.Config{
		"untrusted CA":      withCA(other.CertFile),
		"wrong server name": wrongName,
		"client certificate of a CA the server does not know": foreignClient,
	} {
		if err := dial(conf); err == nil {
			t.Errorf("%s: connected", name)
		}
	}
}
