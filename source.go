package streamtally

import "errors"

// Shard is one shard of a change stream.
type Shard struct {
	ID     string
	Parent string // "" for a shard without one
	Closed bool   // it has an ending sequence number: no record will be added
}

// Position is where reading a shard starts: after a sequence number, or,
// without one, at the oldest record the stream holds (or at its tip, for
// Latest).
type Position struct {
	After  Seq
	Latest bool
}

// Page is what one read of a shard returns.
type Page struct {
	Records []Record
	// Next is the iterator for the next read; "" once a closed shard is
	// read to its end.
	Next string
}

// The errors a source wraps, so that readers tell them apart without
// knowing which service they read.
var (
	// ErrIteratorExpired: the iterator is too old; ask for a new one.
	ErrIteratorExpired = errors.New("shard iterator expired")
	// ErrTrimmed: the records at the position were removed from the
	// stream by its retention before they were read.
	ErrTrimmed = errors.New("records trimmed from the stream")
	// ErrShardGone: the shard is no longer in the stream.
	ErrShardGone = errors.New("shard is not in the stream")
)
