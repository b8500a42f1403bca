package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"time"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/lease"
	"github.com/streamtally/streamtally/publish"
	"github.com/streamtally/streamtally/recount"
)

// recountFlags are the flags backfill, rebuild and verify share.
type recountFlags struct {
	view string
	opts recount.Options
}

func (f *recountFlags) register(fs *flag.FlagSet) {
	f.opts = recount.DefaultOptions()
	fs.StringVar(&f.view, "view", "", "only this view")
	fs.IntVar(&f.opts.Segments, "segments", f.opts.Segments, "parallel scan segments")
	fs.Float64Var(&f.opts.Rate, "rate", f.opts.Rate, "items read per second over all segments; 0 = no limit")
	var page int
	fs.Func("page-size", "items per Scan page", func(s string) error {
		_, err := fmt.Sscan(s, &page)
		f.opts.PageSize = int32(page)
		return err
	})
	fs.DurationVar(&f.opts.Settle, "settle", f.opts.Settle, "how long after the scan a write may take to reach the stream")
	fs.DurationVar(&f.opts.Hold, "hold", f.opts.Hold, "longest a rebuild holds a view's deltas back")
	fs.DurationVar(&f.opts.Lease, "lease", f.opts.Lease, "how long the run owns a view between renewals; a run that dies frees it after this")
}

// recountSetup loads the configuration, checks the flags once and opens
// everything a recount reads and writes.
func recountSetup(ctx context.Context, name string, args []string, needView bool, stderr io.Writer) (*recount.Recounter, []*aggregate.View, *recountFlags, func(), error) {
	var f recountFlags
	cfg, err := loadConfig(name, args, f.register)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if err := f.opts.Validate(); err != nil {
		return nil, nil, nil, nil, usageError(name + ": " + err.Error())
	}
	if needView && f.view == "" {
		return nil, nil, nil, nil, usageError(name + ": --view is required")
	}
	views := aggregate.NewViews(cfg.Specs())
	if f.view != "" {
		var pick []*aggregate.View
		for _, v := range views {
			if v.Name == f.view {
				pick = append(pick, v)
			}
		}
		if pick == nil {
			return nil, nil, nil, nil, usageError(fmt.Sprintf("%s: --view %q is not a view of the configuration", name, f.view))
		}
		views = pick
	}
	// Named, a view that cannot be recounted is an error; among all views
	// it is passed over, so that one such view does not keep the others
	// from being recounted.
	recountable := views[:0:0]
	for _, v := range views {
		err := recount.Recountable(v)
		switch {
		case err != nil && f.view != "":
			return nil, nil, nil, nil, usageError(fmt.Sprintf("%s: view %s: %v", name, v.Name, err))
		case err != nil:
			fmt.Fprintf(stderr, "%s: skipping view %s: %v\n", name, v.Name, err)
		default:
			recountable = append(recountable, v)
		}
	}
	if len(recountable) == 0 {
		return nil, nil, nil, nil, usageError(name + ": no view of the configuration can be recounted from the table")
	}
	views = recountable
	src, err := openSource(ctx, cfg)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	table, err := sourceTable(ctx, cfg, src)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	rdb, err := newRedis(cfg)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if err := reachRedis(ctx, rdb); err != nil {
		rdb.Close()
		return nil, nil, nil, nil, err
	}
	host, _ := os.Hostname()
	f.opts.Holder = fmt.Sprintf("%s (pid %d on %s, started %s)", name, os.Getpid(), host, time.Now().UTC().Format(time.RFC3339))
	log := slog.New(slog.DiscardHandler)
	s := &recount.Recounter{
		DDB:      src.table,
		Table:    table,
		Stream:   src.stream,
		Leases:   lease.NewTable(src.leaseDB, cfg.Checkpoint.App, cfg.Checkpoint.Table, cfg.Checkpoint.WorkerID, cfg.Checkpoint.LeaseDuration, log),
		Store:    publish.NewRedis(rdb, cfg.Redis.Prefix, aggregate.NewViews(cfg.Specs())),
		Progress: stderr,
	}
	return s, views, &f, func() { rdb.Close() }, nil
}

// sourceTable names the table, from the configuration or the stream.
func sourceTable(ctx context.Context, cfg *config.Config, src *source) (string, error) {
	if cfg.Source.Table != "" {
		return cfg.Source.Table, nil
	}
	return src.stream.Table(ctx)
}

func cmdBackfill(ctx context.Context, args []string, stdout io.Writer) error {
	return rebuildViews(ctx, "backfill", args, false, stdout)
}

func cmdRebuild(ctx context.Context, args []string, stdout io.Writer) error {
	return rebuildViews(ctx, "rebuild", args, true, stdout)
}

func rebuildViews(ctx context.Context, name string, args []string, needView bool, stdout io.Writer) error {
	src, views, f, closeAll, err := recountSetup(ctx, name, args, needView, os.Stderr)
	if err != nil {
		return err
	}
	defer closeAll()
	done, err := src.Rebuild(ctx, views, f.opts)
	for _, r := range done {
		fmt.Fprintf(stdout, "view %s: rebuilt from the table, version %d, %d groups, %d stream records caught up\n", r.View, r.Version, r.Groups, r.CaughtUp)
	}
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

func cmdVerify(ctx context.Context, args []string, stdout io.Writer) error {
	src, views, f, closeAll, err := recountSetup(ctx, "verify", args, false, os.Stderr)
	if err != nil {
		return err
	}
	defer closeAll()
	res, err := src.Verify(ctx, views, f.opts)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	drift := 0
	for _, r := range res {
		for _, d := range r.Drift {
			fmt.Fprintln(stdout, d)
		}
		drift += len(r.Drift)
		if len(r.Drift) == 0 {
			fmt.Fprintf(stdout, "view %s: equals the table at version %d (%d groups)\n", r.View, r.Version, r.Groups)
		}
	}
	if drift > 0 {
		return fmt.Errorf("verify: %d differences between Redis and the table", drift)
	}
	return nil
}
