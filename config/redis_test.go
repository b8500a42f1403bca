package config_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally/config"
)

const redisViews = `
source: {table: T}
views: [{name: v, group_by: [p], measures: {n: count}}]
`

// pemFiles writes a self-signed certificate and its key as PEM files and
// returns their paths.
func pemFiles(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "streamtally test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	write := func(p, typ string, b []byte) {
		if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(certFile, "CERTIFICATE", der)
	write(keyFile, "EC PRIVATE KEY", keyDER)
	return certFile, keyFile
}

func TestRedisSettings(t *testing.T) {
	cert, key := pemFiles(t)
	cases := []struct {
		name  string
		redis string            // YAML of the redis section
		env   map[string]string // set on top of the file
		want  config.Redis      // Prefix is always tally
	}{
		{
			name:  "default address",
			redis: "{}",
			want:  config.Redis{Addr: "127.0.0.1:6379", Addrs: []string{"127.0.0.1:6379"}},
		},
		{
			name:  "one address",
			redis: "{addr: cache:6380, db: 3}",
			want:  config.Redis{Addr: "cache:6380", Addrs: []string{"cache:6380"}, DB: 3},
		},
		{
			name:  "one address as cluster seed",
			redis: "{addr: cfg.example:6379, cluster: true}",
			want:  config.Redis{Addr: "cfg.example:6379", Addrs: []string{"cfg.example:6379"}, Cluster: true},
		},
		{
			name:  "several addresses are cluster seeds",
			redis: "{addrs: [n1:7000, n2:7001, n3:7002]}",
			want:  config.Redis{Addr: "n1:7000", Addrs: []string{"n1:7000", "n2:7001", "n3:7002"}, Cluster: true},
		},
		{
			name:  "addresses from the environment",
			redis: "{}",
			env:   map[string]string{"STREAMTALLY_REDIS_ADDRS": "n1:7000,n2:7001"},
			want:  config.Redis{Addr: "n1:7000", Addrs: []string{"n1:7000", "n2:7001"}, Cluster: true},
		},
		{
			name:  "cluster and tls from the environment",
			redis: "{addr: cfg.example:6379}",
			env:   map[string]string{"STREAMTALLY_REDIS_CLUSTER": "true", "STREAMTALLY_REDIS_TLS": "true", "STREAMTALLY_REDIS_SERVER_NAME": "cfg.example"},
			want:  config.Redis{Addr: "cfg.example:6379", Addrs: []string{"cfg.example:6379"}, Cluster: true, TLS: true, ServerName: "cfg.example"},
		},
		{
			name:  "redis URL with user, password and database",
			redis: `{addr: "redis://dash:p%40ss@cache:6380/2"}`,
			want:  config.Redis{Addr: "cache:6380", Addrs: []string{"cache:6380"}, Username: "dash", Password: "p@ss", DB: 2},
		},
		{
			name:  "rediss URL implies TLS and the default port",
			redis: `{addr: "rediss://cache"}`,
			want:  config.Redis{Addr: "cache:6379", Addrs: []string{"cache:6379"}, TLS: true},
		},
		{
			name:  "URL with a password only, the same one in the environment",
			redis: `{addr: "redis://:pw@[::1]:7000"}`,
			env:   map[string]string{"STREAMTALLY_REDIS_PASSWORD": "pw"},
			want:  config.Redis{Addr: "[::1]:7000", Addrs: []string{"[::1]:7000"}, Password: "pw"},
		},
		{
			name:  "TLS with CA, server name and client certificate",
			redis: "{addr: cache:6379, tls: true, ca_file: " + cert + ", server_name: cache.internal, cert_file: " + cert + ", key_file: " + key + "}",
			want: config.Redis{Addr: "cache:6379", Addrs: []string{"cache:6379"}, TLS: true,
				CAFile: cert, ServerName: "cache.internal", CertFile: cert, KeyFile: key},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			cfg, err := config.Load(writeYAML(t, redisViews+"redis: "+c.redis+"\n"))
			if err != nil {
				t.Fatal(err)
			}
			c.want.Prefix = "tally"
			if !reflect.DeepEqual(cfg.Redis, c.want) {
				t.Errorf("redis =\n %+v\nwant\n %+v", cfg.Redis, c.want)
			}
			tc, err := cfg.Redis.TLSConfig()
			if err != nil {
				t.Fatal(err)
			}
			if (tc != nil) != c.want.TLS {
				t.Fatalf("TLSConfig() = %v with tls %v", tc, c.want.TLS)
			}
			if tc == nil {
				return
			}
			if tc.ServerName != c.want.ServerName {
				t.Errorf("TLS server name %q, want %q", tc.ServerName, c.want.ServerName)
			}
			if (tc.RootCAs != nil) != (c.want.CAFile != "") {
				t.Errorf("TLS roots %v with ca_file %q", tc.RootCAs, c.want.CAFile)
			}
			if len(tc.Certificates) != 0 != (c.want.CertFile != "") {
				t.Errorf("%d client certificates with cert_file %q", len(tc.Certificates), c.want.CertFile)
			}
		})
	}
}

func TestBadRedisSettingsReturnOneLineError(t *testing.T) {
	cert, key := pemFiles(t)
	otherCert, _ := pemFiles(t)
	notPEM := filepath.Join(t.TempDir(), "ca.txt")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing-ca.pem")
	cases := []struct {
		name, redis string
		env         map[string]string
		want        []string
	}{
		{name: "addr and addrs", redis: "{addr: a:1, addrs: [b:2, c:3]}", want: []string{"redis.addr", "redis.addrs", "both"}},
		{name: "addr from the environment and addrs", redis: "{addrs: [b:2]}", env: map[string]string{"STREAMTALLY_REDIS_ADDR": "a:1"}, want: []string{"both"}},
		{name: "db with several seeds", redis: "{addrs: [a:1, b:2], db: 1}", want: []string{"redis.db", "Cluster"}},
		{name: "db with cluster", redis: "{addr: a:1, cluster: true, db: 4}", want: []string{"redis.db", "Cluster"}},
		{name: "URL database with cluster", redis: `{addr: "redis://a:1/4", cluster: true}`, want: []string{"redis.db", "Cluster"}},
		{name: "negative db", redis: "{db: -1}", want: []string{"redis.db", "-1"}},
		{name: "addr without port", redis: "{addr: cache}", want: []string{"redis.addr", `"cache"`, "host:port"}},
		{name: "bad seed", redis: "{addrs: [a:1, b]}", want: []string{"redis.addrs[1]", `"b"`}},
		{name: "URL seed", redis: `{addrs: ["redis://a:1", "b:2"]}`, want: []string{"redis.addrs[0]"}},
		{name: "URL with another scheme", redis: `{addr: "http://cache:6379"}`, want: []string{"redis.addr", `"http"`}},
		{name: "URL with a bad port", redis: `{addr: "redis://cache:port"}`, want: []string{"redis.addr", "URL"}},
		{name: "URL with a bad database", redis: `{addr: "redis://cache:6379/zero"}`, want: []string{"redis.addr", "/zero", "database"}},
		{name: "URL with options", redis: `{addr: "redis://cache:6379?dial_timeout=3s"}`, want: []string{"redis.addr", "options"}},
		{name: "URL without host", redis: `{addr: "redis://:6379"}`, want: []string{"redis.addr", "no host"}},
		{name: "URL user differs", redis: `{addr: "redis://a@cache", username: b}`, want: []string{"redis.username"}},
		{name: "URL password differs", redis: `{addr: "redis://a:x@cache"}`, env: map[string]string{"STREAMTALLY_REDIS_PASSWORD": "y"}, want: []string{"redis.password"}},
		{name: "URL database differs", redis: `{addr: "redis://cache/1", db: 2}`, want: []string{"redis.db", "2", "1"}},
		{name: "missing CA file", redis: "{tls: true, ca_file: " + missing + "}", want: []string{"redis.ca_file", "missing-ca.pem"}},
		{name: "CA file not PEM", redis: "{tls: true, ca_file: " + notPEM + "}", want: []string{"redis.ca_file", "ca.txt", "no PEM"}},
		{name: "CA file without TLS", redis: "{ca_file: " + cert + "}", want: []string{"redis.ca_file", "redis.tls"}},
		{name: "server name without TLS", redis: "{server_name: cache}", want: []string{"redis.server_name", "redis.tls"}},
		{name: "cert without key", redis: "{tls: true, cert_file: " + cert + "}", want: []string{"redis.cert_file", "redis.key_file"}},
		{name: "key without cert", redis: "{tls: true, key_file: " + key + "}", want: []string{"redis.cert_file", "redis.key_file"}},
		{name: "key of another certificate", redis: "{tls: true, cert_file: " + otherCert + ", key_file: " + key + "}", want: []string{"redis.cert_file", "redis.key_file"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			clearEnv(t)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			cfg, err := config.Load(writeYAML(t, redisViews+"redis: "+c.redis+"\n"))
			if err == nil {
				t.Fatalf("Load succeeded (%+v), want an error", cfg.Redis)
			}
			checkConfigError(t, err, c.want)
		})
	}
}

// TestRedisErrorsNeverShowThePassword covers addresses that carry a
// password and are wrong for another reason.
func TestRedisErrorsNeverShowThePassword(t *testing.T) {
	const secret = "s3cr3t-pw"
	for _, addr := range []string{
		"redis://user:" + secret + "@cache:port",   // URL parse error
		"redis://user:" + secret + "@cache/x",      // bad database
		"redis://user:" + secret + "@cache?x=1",    // options
		"user:" + secret + "@cache:6379",           // scheme forgotten
		"ftp://user:" + secret + "@cache:6379",     // wrong scheme
		"redis://user:" + secret + "@cache:6379/1", // database with cluster
	} {
		clearEnv(t)
		_, err := config.Load(writeYAML(t, redisViews+"redis: {cluster: true, addr: \""+addr+"\"}\n"))
		if err == nil {
			t.Fatalf("%s: Load succeeded, want an error", addr)
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("error shows the password: %q", err)
		}
	}
}
