package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
)

// validate checks the redis section and normalises it: a URL in
// redis.addr is taken apart, Addrs and Addr both name the servers, and
// Cluster is set when there are several seeds.
func (r *Redis) validate() error {
	if r.Addr != "" && len(r.Addrs) > 0 {
		return errorf("redis.addr and redis.addrs are both set; use redis.addrs alone for cluster seeds")
	}
	if strings.Contains(r.Addr, "://") {
		if err := r.takeURLApart(); err != nil {
			return err
		}
	}
	single := r.Addr != ""
	switch {
	case single:
		r.Addrs = []string{r.Addr}
	case len(r.Addrs) == 0:
		r.Addrs = []string{defaultRedisAddr}
	}
	for i, a := range r.Addrs {
		if host, port, err := net.SplitHostPort(a); err != nil || host == "" || port == "" {
			key := fmt.Sprintf("redis.addrs[%d]", i)
			if single {
				key = "redis.addr"
			}
			return errorf("%s: %s is not host:port or a redis:// or rediss:// URL", key, shown(a))
		}
	}
	r.Addr = r.Addrs[0]
	if len(r.Addrs) > 1 {
		r.Cluster = true
	}
	switch {
	case r.DB < 0:
		return errorf("redis.db: %d is negative", r.DB)
	case r.DB != 0 && r.Cluster:
		return errorf("redis.db: %d is not possible with Redis Cluster, which has only database 0", r.DB)
	case !nameRE.MatchString(r.Prefix) || strings.ContainsAny(r.Prefix, "{}"):
		return errorf("redis.prefix: %q must be letters, digits, '_', '.', '-'", r.Prefix)
	}
	if !r.TLS {
		for _, f := range []struct{ key, val string }{
			{"ca_file", r.CAFile}, {"server_name", r.ServerName}, {"cert_file", r.CertFile}, {"key_file", r.KeyFile},
		} {
			if f.val != "" {
				return errorf("redis.%s: set, but redis.tls is false (set redis.tls: true or use a rediss:// address)", f.key)
			}
		}
	}
	if (r.CertFile == "") != (r.KeyFile == "") {
		return errorf("redis.cert_file and redis.key_file: mutual TLS needs both, or neither")
	}
	// Bad certificate files fail here, at start, rather than at the
	// first connection.
	_, err := r.TLSConfig()
	return err
}

// takeURLApart turns redis.addr = redis[s]://[user[:password]@]host[:port][/db]
// into host:port and the other fields. A field given both in the URL and
// as its own key must not differ.
func (r *Redis) takeURLApart() error {
	u, err := url.Parse(r.Addr)
	if err != nil {
		// url.Error repeats the whole URL, password included.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return errorf("redis.addr: not a valid URL: %v", err)
	}
	switch u.Scheme {
	case "redis":
	case "rediss":
		r.TLS = true
	default:
		return errorf("redis.addr: URL scheme %q is not redis or rediss", u.Scheme)
	}
	if u.Hostname() == "" {
		return errorf("redis.addr: URL has no host")
	}
	if u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return errorf("redis.addr: URL options are not supported; use the redis.* keys")
	}
	port := u.Port()
	if port == "" {
		port = "6379"
	}
	if u.User != nil {
		if name := u.User.Username(); name != "" {
			if r.Username != "" && r.Username != name {
				return errorf("redis.username: differs from the user in redis.addr's URL")
			}
			r.Username = name
		}
		if pw, ok := u.User.Password(); ok {
			if r.Password != "" && r.Password != pw {
				return errorf("redis.password: differs from the password in redis.addr's URL")
			}
			r.Password = pw
		}
	}
	if path := strings.TrimPrefix(u.Path, "/"); path != "" {
		db, err := strconv.Atoi(path)
		if err != nil || db < 0 {
			return errorf("redis.addr: URL path %q is not a database number", u.Path)
		}
		if r.DB != 0 && r.DB != db {
			return errorf("redis.db: %d differs from database %d in redis.addr's URL", r.DB, db)
		}
		r.DB = db
	}
	r.Addr = net.JoinHostPort(u.Hostname(), port)
	return nil
}

// shown quotes an address for an error message, hiding whatever precedes
// an '@': in a URL typed without its scheme, that is a password.
func shown(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		addr = "***@" + addr[i+1:]
	}
	return strconv.Quote(addr)
}

// TLSConfig returns the TLS settings for connections to Redis, or nil when
// redis.tls is off. It reads redis.ca_file, redis.cert_file and
// redis.key_file; problems with them are *Error.
func (r *Redis) TLSConfig() (*tls.Config, error) {
	if !r.TLS {
		return nil, nil
	}
	// An empty ServerName makes crypto/tls verify each address's own host,
	// which is what nodes discovered in a cluster need.
	c := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: r.ServerName}
	if r.CAFile != "" {
		pem, err := os.ReadFile(r.CAFile)
		if err != nil {
			return nil, errorf("redis.ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, errorf("redis.ca_file: %s holds no PEM certificate", r.CAFile)
		}
		c.RootCAs = pool
	}
	if r.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(r.CertFile, r.KeyFile)
		if err != nil {
			return nil, errorf("redis.cert_file, redis.key_file: %s", oneLine(err))
		}
		c.Certificates = []tls.Certificate{cert}
	}
	return c, nil
}
