package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/aws/retry"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams"
	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/consumer"
	"github.com/streamtally/streamtally/lease"
	"github.com/streamtally/streamtally/metrics"
	"github.com/streamtally/streamtally/publish"
	"github.com/streamtally/streamtally/source/ddbstreams"
)

func loadConfig(name string, args []string, extra func(*flag.FlagSet)) (*config.Config, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	path := fs.String("config", "", "configuration file (YAML)")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, usageError(fmt.Sprintf("%s: %v", name, err))
	}
	return config.Load(*path)
}

func cmdRun(ctx context.Context, args []string, stdout io.Writer) error {
	cfg, err := loadConfig("run", args, nil)
	if err != nil {
		return err
	}
	log := newLogger(stdout, cfg.Log.Level)
	// go-redis reports each failed dial itself, as plain text on stderr.
	// The daemon reports failures it acts on; those lines go to debug.
	redis.SetLogger(redisLog{log})

	src, err := openSource(ctx, cfg)
	if err != nil {
		return err
	}
	rdb, err := newRedis(cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	if err := reachRedis(ctx, rdb); err != nil {
		return err
	}
	views := aggregate.NewViews(cfg.Specs())
	store := publish.NewRedis(rdb, cfg.Redis.Prefix, views)
	tally := aggregate.NewTally(views, store, log)
	if cfg.DLQ.MaxLen > 0 {
		tally.SetDeadLetters(publish.NewDeadLetters(rdb, cfg.Redis.Prefix, cfg.DLQ.MaxLen))
	}

	m := metrics.New()
	leases := lease.NewTable(src.leaseDB, cfg.Checkpoint.App, cfg.Checkpoint.Table, cfg.Checkpoint.WorkerID, cfg.Checkpoint.LeaseDuration, log)
	if err := leases.Init(ctx); err != nil {
		if ctx.Err() != nil { // stopped while waiting for the table: a clean exit
			log.Info("stopped before start", "reason", "signal while waiting for the lease table")
			return nil
		}
		return usageError(fmt.Sprintf("checkpoint.table %s%s: cannot create or open the lease table: %v",
			cfg.Checkpoint.Table, at(cfg.Checkpoint.Endpoint), err))
	}
	worker := consumer.NewWorker(src.stream, leases, tally, consumer.Options{
		WorkerID:      cfg.Checkpoint.WorkerID,
		StartLatest:   cfg.Source.Start == config.StartLatest,
		PollInterval:  cfg.Source.PollInterval,
		BatchSize:     cfg.Source.BatchSize,
		SyncInterval:  cfg.Checkpoint.SyncInterval,
		LeaseDuration: cfg.Checkpoint.LeaseDuration,
		ShutdownGrace: cfg.Checkpoint.ShutdownGrace,
		Observer:      m,
	}, log)
	m.Watch(worker, tally)

	// The endpoint outlives the worker's shutdown, so health checks and
	// scrapes keep answering while the last batches drain.
	if cfg.Metrics.Addr != "" {
		ln, err := net.Listen("tcp", cfg.Metrics.Addr)
		if err != nil {
			return fmt.Errorf("metrics.addr: %w", err)
		}
		h := m.Handler([]metrics.Check{
			metrics.LeaseCheck(worker, cfg.Checkpoint.LeaseDuration),
			metrics.ViewsCheck(tally),
			{Name: "redis", Fn: func(ctx context.Context) error { return rdb.Ping(ctx).Err() }},
		})
		httpCtx, stopHTTP := context.WithCancel(context.WithoutCancel(ctx))
		served := make(chan error, 1)
		go func() { served <- metrics.Serve(httpCtx, ln, h, log) }()
		defer func() {
			stopHTTP()
			if err := <-served; err != nil {
				log.Warn("metrics endpoint failed", "err", err)
			}
		}()
	}

	log.Info("starting", "stream", src.stream.ARN(), "lease_table", cfg.Checkpoint.Table, "worker", cfg.Checkpoint.WorkerID,
		"redis", cfg.Redis.Addr, "redis_cluster", cfg.Redis.Cluster, "redis_tls", cfg.Redis.TLS, "prefix", cfg.Redis.Prefix, "views", len(views))
	start := time.Now()
	if err := worker.Run(ctx); err != nil {
		return err
	}
	ws, ts := worker.Stats(), tally.Stats()
	log.Info("stopped", "after", time.Since(start).Round(time.Millisecond).String(),
		"batches", ws.Batches.Load(), "records", ws.Records.Load(),
		"rejected", ts.Rejected.Load(), "replayed", ts.Replayed.Load(), "trimmed", ws.Trimmed.Load())
	return nil
}

// source is the AWS side of a configuration: the stream, ready to read,
// and the lease table's client.
type source struct {
	stream  *ddbstreams.Stream
	leaseDB *dynamodb.Client
	table   *dynamodb.Client // the source table's client
}

// openSource builds the clients and checks that the table's stream exists
// and carries both images.
func openSource(ctx context.Context, cfg *config.Config) (*source, error) {
	c, err := awsConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	api := dynamodbstreams.NewFromConfig(c, endpoint[dynamodbstreams.Options](cfg.Source.Endpoint))
	s := &source{
		leaseDB: dynamodb.NewFromConfig(c, endpoint[dynamodb.Options](cfg.Checkpoint.Endpoint)),
		table:   dynamodb.NewFromConfig(c, endpoint[dynamodb.Options](cfg.Source.Endpoint)),
	}
	arn, err := ddbstreams.Resolve(ctx, s.table, api, cfg.Source.Table, cfg.Source.StreamARN)
	if err != nil {
		var wrong *ddbstreams.StreamError
		if errors.As(err, &wrong) || ctx.Err() != nil {
			return nil, err
		}
		// Unreachable endpoint, missing table, no permission: all need a
		// fix to the configuration or its surroundings, not a retry.
		return nil, usageError(fmt.Sprintf("source.table %s%s: %v", cfg.Source.Table, at(cfg.Source.Endpoint), err))
	}
	s.stream = ddbstreams.New(api, arn)
	return s, nil
}

// at names a custom endpoint in an error.
func at(endpoint string) string {
	if endpoint == "" {
		return ""
	}
	return " at " + endpoint
}

// redisStartupWait is how long a starting daemon waits for Redis: long
// enough for Redis and the daemon to start together, short enough that a
// wrong address is reported, not retried forever.
const redisStartupWait = 10 * time.Second

// reachRedis checks at startup that Redis answers. Once running, the daemon
// waits out Redis outages instead.
func reachRedis(ctx context.Context, rdb redis.UniversalClient) error {
	deadline := time.Now().Add(redisStartupWait)
	for {
		pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err := rdb.Ping(pctx).Err()
		cancel()
		switch {
		case err == nil:
			return nil
		case ctx.Err() != nil:
			return ctx.Err()
		case isAuthError(err) || time.Now().After(deadline):
			return usageError(fmt.Sprintf("redis: cannot use Redis: %v", err))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// redisLog writes go-redis's own messages into the JSON log.
type redisLog struct{ log *slog.Logger }

func (l redisLog) Printf(ctx context.Context, format string, v ...any) {
	l.log.DebugContext(ctx, fmt.Sprintf(format, v...), "component", "go-redis")
}

// isAuthError reports a refusal that waiting will not change.
func isAuthError(err error) bool {
	msg := err.Error()
	for _, p := range []string{"WRONGPASS", "NOAUTH", "NOPERM", "ERR AUTH"} {
		if strings.HasPrefix(msg, p) {
			return true
		}
	}
	return false
}

func newLogger(w io.Writer, level string) *slog.Logger {
	var l slog.Level
	_ = l.UnmarshalText([]byte(level)) // validated in config
	return slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: l}))
}

func awsConfig(ctx context.Context, cfg *config.Config) (aws.Config, error) {
	opts := []func(*awsconfig.LoadOptions) error{
		awsconfig.WithRetryer(func() aws.Retryer {
			return retry.NewStandard(func(o *retry.StandardOptions) {
				o.MaxAttempts = 5
				o.MaxBackoff = 2 * time.Second
			})
		}),
	}
	if cfg.Source.Region != "" {
		opts = append(opts, awsconfig.WithRegion(cfg.Source.Region))
	}
	// DynamoDB Local accepts any signature; without this a laptop with no
	// AWS credentials could not run against it.
	if cfg.Source.Endpoint != "" && os.Getenv("AWS_ACCESS_KEY_ID") == "" {
		opts = append(opts, awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("local", "local", "")))
		if cfg.Source.Region == "" {
			opts = append(opts, awsconfig.WithRegion("us-east-1"))
		}
	}
	c, err := awsconfig.LoadDefaultConfig(ctx, opts...)
	if err != nil {
		return c, fmt.Errorf("load AWS configuration: %w", err)
	}
	if c.Region == "" {
		return c, usageError("source.region: no AWS region; set source.region or AWS_REGION")
	}
	return c, nil
}

// endpoint points a client at a custom endpoint such as DynamoDB Local.
func endpoint[O dynamodb.Options | dynamodbstreams.Options](url string) func(*O) {
	return func(o *O) {
		if url == "" {
			return
		}
		switch o := any(o).(type) {
		case *dynamodb.Options:
			o.BaseEndpoint = aws.String(url)
			// DynamoDB Local's error responses carry a CRC32 that does not
			// match, which makes the SDK log a warning for every
			// conditional write that loses a lease race.
			o.DisableValidateResponseChecksum = true
		case *dynamodbstreams.Options:
			o.BaseEndpoint = aws.String(url)
		}
	}
}

func newRedis(cfg *config.Config) (redis.UniversalClient, error) {
	return publish.NewClient(cfg.Redis)
}
