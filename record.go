// Package streamtally turns a DynamoDB table's change stream into exact,
// live counters in Redis.
//
// The data flows through three packages, each owning one step:
//
//	consumer   reads a change stream under KCL leases and checkpoints
//	aggregate  folds each batch of change records into per-view deltas
//	publish    applies the deltas to Redis atomically and announces them
//
// This root package holds only the types those steps share.
package streamtally

import "time"

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

// Record is one change to one item, read from one shard.
type Record struct {
	Shard          string
	SequenceNumber Seq
	Event          Event
	Keys           Image
	Old            Image // nil for INSERT
	New            Image // nil for REMOVE
	Created        time.Time

	// Malformed is set only by a decoder, on a record it could not
	// decode whole; see Malformed.
	Malformed *Malformed
}

// Malformed is set by the decoder on a record whose Keys, OldImage or
// NewImage is not valid DynamoDB JSON, or whose eventName is unknown. The
// parts that could not be decoded are nil. One such record must not fail
// a whole batch: the fold sets it aside and reading goes on.
type Malformed struct {
	Err error  // the first problem found
	Raw []byte // the whole record as it arrived
}

// Seq is a stream sequence number: a decimal string whose width varies,
// so sequence numbers compare as numbers, never as text. The empty Seq
// means "none": no record yet, no fence, no checkpoint.
type Seq string

// Less reports whether s comes before o. Leading zeros do not count.
func (s Seq) Less(o Seq) bool {
	a, b := trimZeros(string(s)), trimZeros(string(o))
	if len(a) != len(b) {
		return len(a) < len(b)
	}
	return a < b
}

// After reports whether s is a sequence number later than o, where any
// sequence number is later than none and none is later than nothing.
func (s Seq) After(o Seq) bool {
	return s != "" && (o == "" || o.Less(s))
}

func trimZeros(s string) string {
	for len(s) > 1 && s[0] == '0' {
		s = s[1:]
	}
	return s
}
