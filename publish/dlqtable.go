package publish

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/internal/ddbjson"
)

// WriteDeadLetterJSON prints one JSON object per letter, images included.
func WriteDeadLetterJSON(w io.Writer, letters []DeadLetter) error {
	enc := json.NewEncoder(w)
	for _, l := range letters {
		if err := enc.Encode(l); err != nil {
			return err
		}
	}
	return nil
}

// WriteDeadLetterTable prints letters (newest first, as List returns them)
// one per line, each cell kept on its line; off says dlq.max_len is 0, and
// limit is how many were asked for, to say when more are kept.
func WriteDeadLetterTable(w io.Writer, key string, letters []DeadLetter, limit int, off bool) error {
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
