package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
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
	"github.com/streamtally/streamtally/metrics"
	"github.com/streamtally/streamtally/publish"
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

	src, err := openSource(ctx, cfg)
	if err != nil {
		return err
	}
	streams, arn := src.streams, src.arn

	rdb := newRedis(cfg)
	defer rdb.Close()
	views := aggregate.NewViews(cfg.Views)
	store := publish.NewRedis(rdb, cfg.Redis.Prefix, views)
	tally := aggregate.NewTally(views, store, log)

	m := metrics.New()
	leases := consumer.NewLeaseTable(src.leaseDB, cfg.Checkpoint.App, cfg.Checkpoint.Table, cfg.Checkpoint.WorkerID, cfg.Checkpoint.LeaseDuration, log)
	worker := consumer.NewWorker(streams, arn, leases, tally, consumer.Options{
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

	log.Info("starting", "stream", arn, "lease_table", cfg.Checkpoint.Table, "worker", cfg.Checkpoint.WorkerID,
		"redis", cfg.Redis.Addr, "prefix", cfg.Redis.Prefix, "views", len(views))
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
	streams *dynamodbstreams.Client
	arn     string
	leaseDB *dynamodb.Client
}

// openSource builds the clients and checks that the table's stream exists
// and carries both images.
func openSource(ctx context.Context, cfg *config.Config) (*source, error) {
	c, err := awsConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	s := &source{
		streams: dynamodbstreams.NewFromConfig(c, endpoint[dynamodbstreams.Options](cfg.Source.Endpoint)),
		leaseDB: dynamodb.NewFromConfig(c, endpoint[dynamodb.Options](cfg.Checkpoint.Endpoint)),
	}
	table := dynamodb.NewFromConfig(c, endpoint[dynamodb.Options](cfg.Source.Endpoint))
	if s.arn, err = consumer.ResolveStream(ctx, table, s.streams, cfg.Source.Table, cfg.Source.StreamARN); err != nil {
		return nil, err
	}
	return s, nil
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

func newRedis(cfg *config.Config) redis.UniversalClient {
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:    []string{cfg.Redis.Addr},
		Username: cfg.Redis.Username,
		Password: cfg.Redis.Password,
		DB:       cfg.Redis.DB,
	})
}
