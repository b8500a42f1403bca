package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/streamtally/streamtally/consumer"
	"github.com/streamtally/streamtally/lease"
)

// cmdStatus prints who holds each shard's lease and how far behind it is.
// It only reads (DescribeTable, DescribeStream, GetShardIterator,
// GetRecords, Scan) and never creates the lease table.
func cmdStatus(ctx context.Context, args []string, stdout io.Writer) error {
	var asJSON bool
	cfg, err := loadConfig("status", args, func(fs *flag.FlagSet) {
		fs.BoolVar(&asJSON, "json", false, "print JSON instead of a table")
	})
	if err != nil {
		return err
	}
	src, err := openSource(ctx, cfg)
	if err != nil {
		return err
	}
	// Only List is called: no lease is taken, no row written.
	leases := lease.NewTable(src.leaseDB, cfg.Checkpoint.App, cfg.Checkpoint.Table, cfg.Checkpoint.WorkerID,
		cfg.Checkpoint.LeaseDuration, slog.New(slog.DiscardHandler))
	now := time.Now()
	shards, workers, err := consumer.Status(ctx, src.stream, leases, now)
	if errors.Is(err, lease.ErrNoTable) {
		return fmt.Errorf("no lease table %s: no streamtally worker has run with checkpoint.app %s", cfg.Checkpoint.Table, cfg.Checkpoint.App)
	}
	if err != nil {
		return err
	}

	report := consumer.NewReport(src.stream.ARN(), cfg.Checkpoint.Table, now, shards, workers)
	if asJSON {
		err = report.WriteJSON(stdout)
	} else {
		err = report.WriteTable(stdout)
	}
	if err != nil {
		return err
	}
	return report.Err()
}
