package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/publish"
)

func cmdSnapshot(ctx context.Context, args []string, stdout io.Writer) error {
	var viewName string
	cfg, err := loadConfig("snapshot", args, func(fs *flag.FlagSet) {
		fs.StringVar(&viewName, "view", "", "view name")
	})
	if err != nil {
		return err
	}
	var view *aggregate.View
	for _, v := range aggregate.NewViews(cfg.Views) {
		if v.Name == viewName {
			view = v
		}
	}
	if view == nil {
		return usageError(fmt.Sprintf("snapshot: --view %q is not a view of the configuration", viewName))
	}
	rdb, err := newRedis(cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	snap, err := publish.NewRedis(rdb, cfg.Redis.Prefix, nil).Snapshot(ctx, view)
	if err != nil {
		return err
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(snap); err != nil {
		return err
	}
	if snap.Lost != "" {
		return fmt.Errorf("view %s is lost, its counters are incomplete: %s", view.Name, snap.Lost)
	}
	return nil
}
