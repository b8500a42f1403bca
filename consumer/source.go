package consumer

import (
	"context"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/lease"
)

// ShardSource is the stream a Worker reads: ddbstreams.Stream for a
// DynamoDB Stream. Errors the reader acts on wrap streamtally's
// ErrIteratorExpired, ErrTrimmed and ErrShardGone; any other error is
// retried with backoff.
type ShardSource interface {
	// Shards lists every shard of the stream, parents before children.
	Shards(ctx context.Context) ([]streamtally.Shard, error)
	// Iterator returns an iterator of shard at p, or "" for a closed
	// shard with nothing after p.
	Iterator(ctx context.Context, shard string, p streamtally.Position) (string, error)
	// Read reads a page of at most limit records at iter.
	Read(ctx context.Context, shard, iter string, limit int) (streamtally.Page, error)
}

// Leases is the lease table a Worker reads its shards under:
// lease.Table in DynamoDB, lease.Memory in unit tests. Renew, Checkpoint
// and MarkEnded hold only while the row is as the worker last saw it;
// they fail with lease.ErrLeaseLost or lease.ErrLeaseHeld otherwise.
type Leases interface {
	Init(ctx context.Context) error
	List(ctx context.Context) (map[string]lease.Lease, map[string]bool, error)
	Take(ctx context.Context, s streamtally.Shard, seen *lease.Lease, startedAt time.Time) (lease.Taken, error)
	Renew(ctx context.Context, shard string) error
	Checkpoint(ctx context.Context, shard, seq string) error
	Release(shard string) error
	MarkEnded(ctx context.Context, seen lease.Lease) error
	Heartbeat(ctx context.Context) error
	Leave(ctx context.Context) error
}

// LeaseLister reads the lease table, for Status.
type LeaseLister interface {
	List(ctx context.Context) (map[string]lease.Lease, map[string]bool, error)
}
