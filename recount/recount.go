// Package recount computes views from the table itself: a scan corrected
// to a cut in the stream.
//
// A cut is a position per shard read before the scan starts; every record
// at or before it happened before the scan read anything. The state of the
// table at the cut follows from the scan and the records after the cut:
// an item with no record after the cut did not change between the cut and
// the scan's read of it, and an item with records after the cut was, at
// the cut, the old image of its first one. Contributions are pure
// functions of images, so the state at the cut plus every record after it
// telescopes to the table as it is. Backfill and rebuild write that state
// into fresh keys and swap them in at a fence every daemon respects;
// verify compares it with what Redis holds.
package recount

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	ddbtypes "github.com/aws/aws-sdk-go-v2/service/dynamodb/types"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/lease"
	"github.com/streamtally/streamtally/publish"
)

// Leases lists the lease table's rows: the checkpoints of the daemons.
// *lease.Table implements it.
type Leases interface {
	List(ctx context.Context) (map[string]lease.Lease, map[string]bool, error)
}

// Stream is the table's change stream; ddbstreams.Stream implements it.
type Stream interface {
	Shards(ctx context.Context) ([]streamtally.Shard, error)
	Iterator(ctx context.Context, shard string, p streamtally.Position) (string, error)
	Read(ctx context.Context, shard, iter string, limit int) (streamtally.Page, error)
}

// Recounter recounts views: it reads the table, its stream and the lease
// table, and writes to the store.
type Recounter struct {
	DDB    *dynamodb.Client // the table
	Table  string
	Stream Stream
	Leases Leases // nil when there is no lease table
	Store  *publish.Redis
	// Progress receives one line at a time about what the recount does;
	// nil discards them.
	Progress io.Writer
}

// Options shape a recount.
type Options struct {
	Segments int           // parallel scan segments
	Rate     float64       // items read per second, over all segments; 0 = no limit
	PageSize int32         // items per Scan page
	Settle   time.Duration // how long after the scan a write may take to reach the stream
	Hold     time.Duration // how long a rebuild may hold a view
	Poll     time.Duration // wait after an empty read of a shard
	// Lease is how long a run owns a view without renewing its lease: a
	// run that dies leaves the view to the next one after at most this.
	Lease time.Duration
	// Holder describes the run to a run it refuses.
	Holder string
}

// DefaultOptions returns the command's defaults.
func DefaultOptions() Options {
	return Options{Segments: 4, PageSize: 500, Settle: 2 * time.Second, Hold: 30 * time.Second, Poll: 200 * time.Millisecond, Lease: 30 * time.Second, Holder: "a recount"}
}

// Validate checks the options once, for the command line.
func (o Options) Validate() error {
	switch {
	case o.Segments < 1 || o.Segments > 1000000:
		return errors.New("--segments must be between 1 and 1000000")
	case o.Rate < 0:
		return errors.New("--rate must not be negative")
	case o.PageSize < 1:
		return errors.New("--page-size must be at least 1")
	case o.Settle < 0:
		return errors.New("--settle must not be negative")
	case o.Hold < time.Second:
		return errors.New("--hold must be at least 1s")
	case o.Poll <= 0:
		return errors.New("poll interval must be positive")
	case o.Lease < time.Second:
		return errors.New("--lease must be at least 1s")
	}
	return nil
}

// Recountable says whether a view can be recomputed from the table. Every
// view whose contributions depend only on an item's image can. A view that
// depends on when a record reached the stream cannot: a scan does not know
// it.
func Recountable(v *aggregate.View) error {
	if !v.Recomputable() {
		return errors.New("its buckets follow stream time (time: stream), which a table scan cannot recount")
	}
	return nil
}

func (s *Recounter) progress(format string, args ...any) {
	if s.Progress != nil {
		fmt.Fprintf(s.Progress, format+"\n", args...)
	}
}

// keySchema returns the names of the table's key attributes.
func (s *Recounter) keySchema(ctx context.Context) ([]string, error) {
	out, err := s.DDB.DescribeTable(ctx, &dynamodb.DescribeTableInput{TableName: &s.Table})
	if err != nil {
		return nil, fmt.Errorf("describe table %s: %w", s.Table, err)
	}
	var names []string
	for _, k := range out.Table.KeySchema {
		if k.KeyType == ddbtypes.KeyTypeHash {
			names = append([]string{*k.AttributeName}, names...)
		} else {
			names = append(names, *k.AttributeName)
		}
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("table %s has no key schema", s.Table)
	}
	return names, nil
}
