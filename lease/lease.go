// Package lease keeps the leases and checkpoints of a stream's shards: who
// reads each shard, until when, and how far every record is applied.
// Table keeps them in DynamoDB in vmware-go-kcl-v2's layout; Memory keeps
// them in this process, for the consumer's unit tests.
package lease

import (
	"errors"
	"time"

	"github.com/vmware/vmware-go-kcl-v2/clientlibrary/checkpoint"
)

// ShardEnd is the checkpoint of a shard read to its end.
const ShardEnd = checkpoint.ShardEnd

// workerRowPrefix marks the rows in which workers announce they are alive.
// They let a worker that holds no lease yet count in the share, so shards
// spread over every running process, not only the ones that came first.
const workerRowPrefix = "_worker:"

// ErrLeaseLost means another worker owns the lease now.
var ErrLeaseLost = errors.New("lease lost")

// startedAtKey is the lease row attribute in which the first worker to
// start a shard at LATEST records when it did: LATEST is a position no
// later reader can ask for again, so a shard handed over before anything
// of it was checkpointed resumes from that time instead.
const startedAtKey = "StartedAt"

// Lease is one row of the lease table.
type Lease struct {
	Shard      string
	Parent     string
	Owner      string
	Checkpoint string // a sequence number, ShardEnd, or "" (not started)
	Timeout    time.Time
	// StartedAt is when the first worker started the shard at LATEST;
	// zero for a shard started anywhere else.
	StartedAt time.Time

	timeout string // Timeout as written, for conditions on the row
}

// Taken is what taking a lease tells the new owner.
type Taken struct {
	Checkpoint string
	StartedAt  time.Time
	// Existed says the shard's row was there before: some worker started
	// the shard, so it must never start at LATEST again.
	Existed bool
	// From is the owner whose lease expired instead of being released:
	// it stopped without handing the shard over. "" when the lease was
	// free.
	From string
}

// ErrLeaseHeld means another worker holds an unexpired lease.
var ErrLeaseHeld = errors.New("lease held by another worker")

// ErrNoTable means the lease table does not exist: no worker of the
// application has run yet.
var ErrNoTable = errors.New("no lease table")
