package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/internal/ddbjson"
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
		enc := json.NewEncoder(stdout)
		for _, l := range letters {
			if err := enc.Encode(l); err != nil {
				return err
			}
		}
		return nil
	}
	return writeDLQTable(stdout, publish.DeadLetterKey(cfg.Redis.Prefix), letters, limit, cfg.DLQ.MaxLen == 0)
}

func hasView(views []config.View, name string) bool {
	for _, v := range views {
		if v.Name == name {
			return true
		}
	}
	return false
}

func writeDLQTable(w io.Writer, key string, letters []publish.DeadLetter, limit int, off bool) error {
	if off {
		fmt.Fprintln(w, "dlq.max_len is 0: new dead letters are logged and counted but not kept")
	}
	if len(letters) == 0 {
		_, err := fmt.Fprintf(w, "no dead letters in %s\n", key)
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TIME\tVIEW\tSHARD\tSEQ\tEVENT\tKEYS\tREASON\tDETAIL")
	for _, l := range letters {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			time.UnixMilli(l.TsMS).UTC().Format(time.RFC3339), cell(l.View), cell(l.Shard), cell(l.Seq),
			cell(l.Event), cell(keysText(l.Keys)), cell(l.Reason), cell(l.Detail))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(letters) == limit {
		_, err := fmt.Fprintf(w, "newest %d shown; --limit shows more\n", limit)
		return err
	}
	return nil
}

// keysText shows an item's key as attribute=value pairs, or as it was
// stored if that is not an image.
func keysText(raw json.RawMessage) string {
	img, err := ddbjson.DecodeImage(raw)
	if err != nil || img == nil {
		return string(raw)
	}
	return aggregate.KeyString(img)
}

// cell keeps a table cell on one line: item data can hold tabs and
// newlines.
func cell(s string) string {
	if s == "" {
		return "-"
	}
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
