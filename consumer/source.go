package consumer

import (
	"context"

	"github.com/streamtally/streamtally"
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
