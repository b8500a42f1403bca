// Command loadgen drives the fundraiser demo: it creates the Donations
// table, writes donations to it, and checks streamtally's counters against
// a full scan of the table.
//
//	loadgen create --endpoint http://127.0.0.1:8000 --table Donations
//	loadgen write  --endpoint http://127.0.0.1:8000 --table Donations --ops 2000
//	loadgen check  --config streamtally.yaml
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/internal/loadgen"
	"github.com/streamtally/streamtally/publish"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if len(os.Args) < 2 {
		fail(2, "usage: loadgen create|write|check [flags]")
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	endpoint := fs.String("endpoint", "http://127.0.0.1:8000", "DynamoDB endpoint")
	table := fs.String("table", "Donations", "table name")
	region := fs.String("region", "us-east-1", "AWS region")
	var opts loadgen.Options
	fs.IntVar(&opts.Ops, "ops", 2000, "writes in all")
	fs.IntVar(&opts.Writers, "writers", 4, "concurrent writers")
	fs.IntVar(&opts.Rate, "rate", 0, "writes per second (0: as fast as possible)")
	fs.Uint64Var(&opts.Seed, "seed", uint64(time.Now().UnixNano()), "random seed")
	fs.Float64Var(&opts.BadRate, "bad-rate", 0, "share of inserts that are bad records")
	cfgPath := fs.String("config", "streamtally.yaml", "streamtally configuration (check)")
	_ = fs.Parse(os.Args[2:])

	switch os.Args[1] {
	case "create":
		if err := loadgen.CreateTable(ctx, client(ctx, *endpoint, *region), *table); err != nil {
			fail(1, err.Error())
		}
		fmt.Printf("table %s ready with a NEW_AND_OLD_IMAGES stream\n", *table)
	case "write":
		start := time.Now()
		counts, err := loadgen.Run(ctx, client(ctx, *endpoint, *region), *table, opts)
		if err != nil {
			fail(1, err.Error())
		}
		fmt.Printf("wrote %s in %s\n", counts, time.Since(start).Round(time.Millisecond))
	case "check":
		os.Exit(check(ctx, *cfgPath))
	default:
		fail(2, "usage: loadgen create|write|check [flags]")
	}
}

func check(ctx context.Context, path string) int {
	cfg, err := config.Load(path)
	if err != nil {
		fail(2, err.Error())
	}
	region := cfg.Source.Region
	if region == "" {
		region = "us-east-1"
	}
	rdb := redis.NewClient(&redis.Options{Addr: cfg.Redis.Addr, Username: cfg.Redis.Username, Password: cfg.Redis.Password, DB: cfg.Redis.DB})
	defer rdb.Close()
	views := aggregate.NewViews(cfg.Specs())
	store := publish.NewRedis(rdb, cfg.Redis.Prefix, views)
	diffs, err := loadgen.Check(ctx, client(ctx, cfg.Source.Endpoint, region), cfg.Source.Table, store, views)
	if err != nil {
		fail(1, err.Error())
	}
	for _, d := range diffs {
		fmt.Println("DRIFT", d)
	}
	if len(diffs) > 0 {
		return 1
	}
	fmt.Printf("every view equals a full scan of %s, exactly\n", cfg.Source.Table)
	return 0
}

func client(ctx context.Context, endpoint, region string) *dynamodb.Client {
	c, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region),
		awsconfig.WithCredentialsProvider(credentials.NewStaticCredentialsProvider("local", "local", "")))
	if err != nil {
		fail(1, err.Error())
	}
	return dynamodb.NewFromConfig(c, func(o *dynamodb.Options) {
		if endpoint != "" {
			o.BaseEndpoint = aws.String(endpoint)
		}
	})
}

func fail(code int, msg string) {
	fmt.Fprintln(os.Stderr, "loadgen:", msg)
	os.Exit(code)
}
