package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/publish"
)

// cmdDLQ lists the dead letters, newest first: the records views set
// aside as bad data. A record kept twice (a replay after a crash) is
// listed once.
func cmdDLQ(ctx context.Context, args []string, stdout io.Writer) error {
	var (
		viewName string
		limit    int
		asJSON   bool
	)
	cfg, err := loadConfig("dlq", args, func(fs *flag.FlagSet) {
		fs.StringVar(&viewName, "view", "", "only this view's dead letters")
		fs.IntVar(&limit, "limit", 50, "at most this many, newest first")
		fs.BoolVar(&asJSON, "json", false, "one JSON object per line, with the images")
	})
	if err != nil {
		return err
	}
	if limit < 1 {
		return usageError(fmt.Sprintf("dlq: --limit %d: must be at least 1", limit))
	}
	if viewName != "" && !hasView(cfg.Views, viewName) {
		return usageError(fmt.Sprintf("dlq: --view %q is not a view of the configuration", viewName))
	}
	rdb, err := newRedis(cfg)
	if err != nil {
		return err
	}
	defer rdb.Close()
	letters, err := publish.NewDeadLetters(rdb, cfg.Redis.Prefix, cfg.DLQ.MaxLen).List(ctx, viewName, limit)
	if err != nil {
		return err
	}
	if asJSON {
		return publish.WriteDeadLetterJSON(stdout, letters)
	}
	return publish.WriteDeadLetterTable(stdout, publish.DeadLetterKey(cfg.Redis.Prefix), letters, limit, cfg.DLQ.MaxLen == 0)
}

func hasView(views []config.View, name string) bool {
	for _, v := range views {
		if v.Name == name {
			return true
		}
	}
	return false
}
