// Package streamtally turns a DynamoDB table's change stream into exact,
// live counters in Redis.
//
// The data flows through three packages, each owning one step:
//
//	consumer   reads the DynamoDB Stream under KCL leases and checkpoints
//	aggregate  folds each batch of change records into per-view deltas
//	publish    applies the deltas to Redis atomically and announces them
//
// This root package holds only the types those steps share.
package streamtally

import (
	"time"

	"github.com/aws/aws-sdk-go-v2/service/dynamodbstreams/types"
)

// Event is the kind of change a stream record describes.
type Event uint8

const (
	Insert Event = iota + 1
	Modify
	Remove
)

func (e Event) String() string {
	switch e {
	case Insert:
		return "INSERT"
	case Modify:
		return "MODIFY"
	case Remove:
		return "REMOVE"
	}
	return "UNKNOWN"
}

// Image is an item as DynamoDB Streams carries it.
type Image = map[string]types.AttributeValue

// Record is one change to one item, read from one shard.
type Record struct {
	Shard          string
	SequenceNumber string
	Event          Event
	Keys           Image
	Old            Image // nil for INSERT
	New            Image // nil for REMOVE
	Created        time.Time

	// Malformed is set only by DecodeRecords, on a record it could not
	// decode whole; see Malformed.
	Malformed *Malformed
}

// SeqLess reports whether stream sequence number a comes before b.
// Sequence numbers are decimal strings of varying width, so they are
// compared as numbers: length first once leading zeros are gone.
func SeqLess(a, b string) bool {
	a, b = trimZeros(a), trimZeros(b)
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

func trimZeros(s string) string {
	for len(s) > 1 && s[0] == '0' {
		s = s[1:]
	}
	return s
}
