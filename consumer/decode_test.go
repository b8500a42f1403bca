package consumer_test

import (
	"context"
	"reflect"
	"sync"
	"testing"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/internal/streamstest"
)

// images keeps what the handler was given, by sequence number.
type images struct {
	mu   sync.Mutex
	recs map[string]streamtally.Record
}

func (h *images) HandleBatch(_ context.Context, _ string, _ streamtally.Seq, recs []streamtally.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, r := range recs {
		h.recs[string(r.SequenceNumber)] = r
	}
	return nil
}

func (h *images) ShardReleased(string) {}

func (h *images) OpenShard(context.Context, string, streamtally.Seq, bool) (streamtally.Seq, bool, error) {
	return "", false, nil
}

func (h *images) RecordsLost(context.Context, string, string) error { return nil }

func (h *images) get(seq string) (streamtally.Record, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.recs[seq]
	return r, ok
}

func TestWorkerHandsUndecodableRecordOnInsteadOfStallingTheShard(t *testing.T) {
	f := newFixture(t)
	f.srv.AddShard("s1", "")
	seqs := f.srv.Append("s1",
		streamstest.Record{NewImage: streamstest.Item("pk", "a", "amount", 5)},
		// Valid JSON, but a binary attribute that is not base64: the SDK's
		// deserializer fails the whole GetRecords call on it.
		streamstest.Record{NewImage: streamstest.Item("pk", "b", "blob", streamstest.Raw{"B": "not base64!"})},
		streamstest.Record{NewImage: streamstest.Item("pk", "c", "amount", 7)},
	)
	h := &images{recs: map[string]streamtally.Record{}}
	opt := options("w1")
	opt.BatchSize = 10
	w := f.start(opt, h)
	waitFor(t, patience, "every record to be handled", func() bool {
		_, ok := h.get(seqs[2])
		return ok
	})
	w.stop(t)

	for i, seq := range seqs {
		r, ok := h.get(seq)
		if !ok {
			t.Fatalf("record %d (%s) was never handled", i, seq)
		}
		if r.Shard != "s1" || r.Event != streamtally.Insert || r.Created.IsZero() {
			t.Errorf("record %d: shard %q, event %v, created %v; want s1, INSERT and a creation time", i, r.Shard, r.Event, r.Created)
		}
		if malformed := r.Malformed != nil; malformed != (i == 1) {
			t.Errorf("record %d: Malformed = %+v, want it set only on the undecodable record", i, r.Malformed)
		}
	}
	good, _ := h.get(seqs[2])
	if got := good.New["amount"]; got == nil {
		t.Errorf("record 2: NewImage %v lacks amount", good.New)
	}
	if bad, _ := h.get(seqs[1]); !reflect.DeepEqual(bad.Keys, streamtally.Image{"pk": &streamtally.S{Value: "b"}}) {
		t.Errorf("undecodable record: Keys %+v, want pk b", bad.Keys)
	}
	if !f.checkpointsAre(map[string]string{"s1": seqs[2]}) {
		t.Errorf("leases = %+v, want s1 checkpointed at %s", f.leases(), seqs[2])
	}
}
