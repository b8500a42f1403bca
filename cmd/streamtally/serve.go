package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/gateway"
	"github.com/streamtally/streamtally/metrics"
)

// cmdServe runs the dashboard gateway. It reads Redis only, so it scales
// apart from the daemons and needs no AWS access.
func cmdServe(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := loadConfig("serve", args, nil)
	if err != nil {
		return err
	}
	if err := cfg.Serve.RequireAccess(); err != nil {
		return err
	}
	log := newLogger(stdout, cfg.Log.Level)
	redis.SetLogger(redisLog{log})
	rdb, err := newRedis(cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := reachRedis(ctx, rdb); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Serve.Addr)
	if err != nil {
		return fmt.Errorf("serve.addr: %w", err)
	}
	srv := gateway.New(gateway.Options{
		Serve: cfg.Serve, Client: rdb, Prefix: cfg.Redis.Prefix, Views: cfg.Views, Log: log,
	})
	// Metrics on their own port, like the daemon's, so that scrapes need
	// no token and tenants do not see them.
	if cfg.Metrics.Addr != "" {
		mln, err := net.Listen("tcp", cfg.Metrics.Addr)
		if err != nil {
			ln.Close()
			return fmt.Errorf("metrics.addr: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("GET /metrics", srv.MetricsHandler())
		mux.Handle("GET /healthz", srv.Handler())
		mux.Handle("GET /readyz", srv.Handler())
		mctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		served := make(chan error, 1)
		go func() { served <- metrics.Serve(mctx, mln, mux, log) }()
		defer func() {
			stop()
			if err := <-served; err != nil {
				log.Warn("metrics endpoint failed", "err", err)
			}
		}()
	}
	auth := "tokens"
	if cfg.Serve.Public {
		auth = "public"
		log.Warn("serve.public is true: every view is readable without a token")
	}
	log.Info("serving", "addr", ln.Addr().String(), "redis", cfg.Redis.Addr, "redis_cluster", cfg.Redis.Cluster,
		"prefix", cfg.Redis.Prefix, "views", len(cfg.Views), "auth", auth, "tokens", len(cfg.Serve.Tokens),
		"signed_tokens", cfg.Serve.HMACSecret != "", "cors_origins", cfg.Serve.CORSOrigins)
	err = srv.Serve(ctx, ln)
	log.Info("stopped")
	return err
}

// cmdToken prints a signed token for serve.hmac_secret that reads the given
// views until it expires.
func cmdToken(ctx context.Context, args []string, stdout io.Writer) error {
	var views, sub string
	var ttl time.Duration
	cfg, err := loadConfig("token", args, func(fs *flag.FlagSet) {
		fs.StringVar(&views, "views", "", "comma-separated views the token may read, or *")
		fs.StringVar(&sub, "sub", "", "who holds the token, shown in the gateway's logs")
		fs.DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token is valid")
	})
	if err != nil {
		return err
	}
	if cfg.Serve.HMACSecret == "" {
		return usageError("token: serve.hmac_secret is not set (STREAMTALLY_SERVE_HMAC_SECRET)")
	}
	if ttl <= 0 {
		return usageError("token: --ttl must be positive")
	}
	known := map[string]bool{config.AllViews: true}
	for _, v := range cfg.Views {
		known[v.Name] = true
	}
	var list []string
	for _, v := range strings.Split(views, ",") {
		if v = strings.TrimSpace(v); v == "" {
			continue
		}
		if !known[v] {
			return usageError(fmt.Sprintf("token: --views: %q is not a view of the configuration", v))
		}
		list = append(list, v)
	}
	if len(list) == 0 {
		return usageError("token: --views is required (comma-separated view names, or *)")
	}
	tok, err := gateway.Sign(cfg.Serve.HMACSecret, sub, list, time.Now().Add(ttl))
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, tok)
	return nil
}
