package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TLSServerName is a DNS name in the certificate of RedisTLS's server,
// besides its IP address 127.0.0.1. The .test domain never resolves.
const TLSServerName = "redis.streamtally.test"

// TLSRedis is a redis-server that accepts TLS connections only.
type TLSRedis struct {
	Addr string // 127.0.0.1:PORT
	// CA signed the server's certificate, which names 127.0.0.1 and
	// TLSServerName. The server also accepts client certificates it signs,
	// and clients without one.
	CA *CA
}

var tlsRedis struct {
	once sync.Once
	srv  *TLSRedis
	err  error
}

// RedisTLS returns a TLS-only redis-server shared by all tests of this test
// binary, starting it on first use. Tests sharing it should use distinct
// keys and ACL user names.
func RedisTLS(tb testing.TB) *TLSRedis {
	tb.Helper()
	Needs(tb, "redis-server (TLS)")
	tlsRedis.once.Do(func() { tlsRedis.srv, tlsRedis.err = startTLSRedis() })
	if tlsRedis.err != nil {
		tb.Fatalf("testenv: %v", tlsRedis.err)
	}
	return tlsRedis.srv
}

// ClientConfig is a TLS configuration that trusts the server, for tests'
// own clients.
func (r *TLSRedis) ClientConfig() *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(r.CA.cert)
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
}

func startTLSRedis() (*TLSRedis, error) {
	dir, err := os.MkdirTemp("", "testenv-redis-tls-")
	if err != nil {
		return nil, err
	}
	shared.mu.Lock()
	shared.dirs = append(shared.dirs, dir)
	shared.mu.Unlock()
	ca, err := newCA(dir)
	if err != nil {
		return nil, err
	}
	cert, key, err := ca.issue("server", "127.0.0.1", TLSServerName)
	if err != nil {
		return nil, err
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	p, err := startProc("redis-tls", dir, port,
		"redis-server", "--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--tls-cert-file", cert, "--tls-key-file", key, "--tls-ca-cert-file", ca.CertFile,
		"--tls-auth-clients", "optional",
		"--save", "", "--appendonly", "no", "--dir", dir)
	if err != nil {
		return nil, err
	}
	register(p)
	srv := &TLSRedis{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), CA: ca}
	err = p.waitReady(redisStartTimeout, func() bool {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: time.Second}, "tcp", srv.Addr, srv.ClientConfig())
		if err != nil {
			return false
		}
		defer c.Close()
		reply, err := roundTrip(c, "PING")
		return err == nil && reply == "PONG"
	})
	if err != nil {
		return nil, err
	}
	return srv, nil
}

// CA is a certificate authority of its own, for TLS tests.
type CA struct {
	CertFile string // the CA certificate, PEM
	dir      string
	cert     *x509.Certificate
	key      *ecdsa.PrivateKey
	mu       sync.Mutex
	serial   int64
}

// NewCA creates a CA with its files in a temporary directory of tb. It is
// trusted by nothing: use it for certificates a server must refuse.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	ca, err := newCA(tb.TempDir())
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return ca
}

// Issue writes a certificate signed by ca, for hosts (IP addresses or DNS
// names) and good for servers and clients alike, and its key, as PEM files.
func (ca *CA) Issue(tb testing.TB, hosts ...string) (certFile, keyFile string) {
	tb.Helper()
	certFile, keyFile, err := ca.issue("leaf", hosts...)
	if err != nil {
		tb.Fatalf("testenv: %v", err)
	}
	return certFile, keyFile
}

func newCA(dir string) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "streamtally test CA " + filepath.Base(dir)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	ca := &CA{CertFile: filepath.Join(dir, "ca.pem"), dir: dir, cert: cert, key: key, serial: 1}
	if err := writePEM(ca.CertFile, "CERTIFICATE", der); err != nil {
		return nil, err
	}
	return ca, nil
}

func (ca *CA) issue(name string, hosts ...string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	ca.mu.Lock()
	ca.serial++
	serial := ca.serial
	ca.mu.Unlock()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(serial),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return "", "", fmt.Errorf("issue certificate %s: %w", name, err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", "", err
	}
	base := filepath.Join(ca.dir, fmt.Sprintf("%s-%d", name, serial))
	certFile, keyFile = base+".pem", base+"-key.pem"
	if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
		return "", "", err
	}
	if err := writePEM(keyFile, "EC PRIVATE KEY", keyDER); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}
