package publish

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/internal/testenv"
)

// TestTLSClient connects NewClient to a TLS-only server: trusted settings
// work for applies and snapshots; an untrusted CA, a name the certificate
// does not carry, plain text, or a client certificate the server does not
// trust fail with an error that says so.
func TestTLSClient(t *testing.T) {
	srv := testenv.RedisTLS(t)
	ownCert, ownKey := srv.CA.Issue(t, "streamtally")
	other := testenv.NewCA(t)
	foreignCert, foreignKey := other.Issue(t, "streamtally")
	cases := []struct {
		name    string
		redis   config.Redis
		wantErr string // empty: must work
	}{
		{"CA file, address as server name", config.Redis{TLS: true, CAFile: srv.CA.CertFile}, ""},
		{"CA file and server name", config.Redis{TLS: true, CAFile: srv.CA.CertFile, ServerName: testenv.TLSServerName}, ""},
		{"client certificate", config.Redis{TLS: true, CAFile: srv.CA.CertFile, CertFile: ownCert, KeyFile: ownKey}, ""},
		{"untrusted CA", config.Redis{TLS: true, CAFile: other.CertFile}, "x509: certificate signed by unknown authority"},
		{"system roots", config.Redis{TLS: true}, "x509: certificate signed by unknown authority"},
		{"wrong server name", config.Redis{TLS: true, CAFile: srv.CA.CertFile, ServerName: "other.streamtally.test"}, "x509: certificate is valid for " + testenv.TLSServerName + ", not other.streamtally.test"},
		{"client certificate of another CA", config.Redis{TLS: true, CAFile: srv.CA.CertFile, CertFile: foreignCert, KeyFile: foreignKey}, "tls: unknown certificate authority"},
		{"plain text", config.Redis{}, "EOF"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			c.redis.Addr, c.redis.Addrs = srv.Addr, []string{srv.Addr}
			client, err := NewClient(c.redis)
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			if _, ok := client.(*redis.Client); !ok {
				t.Fatalf("NewClient without cluster returned %T, want *redis.Client", client)
			}
			v := platformView("by_platform")
			store := NewRedis(client, testPrefix(t), []*aggregate.View{v})
			err = store.Apply(ctx, mkDelta(v, "s", "", "1", map[string]gd{"Web": {1, []string{"2.5"}}}))
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("Apply: error %v, want one saying %q", err, c.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			snap, err := store.Snapshot(ctx, v)
			if err != nil {
				t.Fatal(err)
			}
			if snap.Version != 1 || snap.Measures["amount"]["Web"] != "2.5" {
				t.Fatalf("snapshot %+v", snap)
			}
		})
	}
}
