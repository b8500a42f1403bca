package publish

import (
	"context"
	"strings"
	"testing"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
)

// snapshotKeys dumps every key under the fixture's prefix, so that a test
// can put Redis back to that moment: what a failover to a replica that
// missed the last writes, or an AOF that lost its last second, leaves.
func (f *fixture) snapshotKeys() map[string]string {
	f.t.Helper()
	ctx := context.Background()
	keys, err := f.c.Keys(ctx, f.prefix+":*").Result()
	if err != nil {
		f.t.Fatal(err)
	}
	out := map[string]string{}
	for _, k := range keys {
		d, err := f.c.Dump(ctx, k).Result()
		if err != nil {
			f.t.Fatal(err)
		}
		out[k] = d
	}
	return out
}

func (f *fixture) restoreKeys(dump map[string]string) {
	f.t.Helper()
	ctx := context.Background()
	keys, _ := f.c.Keys(ctx, f.prefix+":*").Result()
	for _, k := range keys {
		f.c.Del(ctx, k)
	}
	for k, d := range dump {
		if err := f.c.RestoreReplace(ctx, k, 0, d).Err(); err != nil {
			f.t.Fatal(err)
		}
	}
}

// Redis loses its last writes (an asynchronous replica promoted, an AOF
// fsynced once a second) together with the reader that made them, whose
// checkpoint trailed them. The next owner replays from the checkpoint and
// rebuilds the counters exactly, but the versions it issues are numbers
// subscribers already saw with other contents: they must come under a
// new epoch, or a subscriber that applies "versions after mine" diverges
// without a word. A handover that continues what subscribers saw keeps
// the epoch.
func TestRedisLosingWritesWithTheirReaderNeverReissuesAVersion(t *testing.T) {
	for _, tc := range []struct {
		name       string
		takeover   bool
		checkpoint int // records checkpointed before the loss
		lose       bool
		newEpoch   bool
	}{
		{name: "crash after a failover, checkpoint behind the fence", takeover: true, checkpoint: 4, lose: true, newEpoch: true},
		{name: "crash after a failover, checkpoint at the fence", takeover: true, checkpoint: 6, lose: true, newEpoch: true},
		{name: "crash, nothing lost", takeover: true, checkpoint: 6, newEpoch: true},
		{name: "graceful handover", checkpoint: 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			v := platformView("by_platform")
			f := newFixture(t, v)
			sub := subscribe(t, f.c, f.keys(v.Name).Channel())
			recs := tallyRecords()
			first := aggregate.NewTally([]*aggregate.View{v}, f.store, discardLog())
			if _, _, err := first.OpenShard(ctx, "shard-0", "", false); err != nil {
				t.Fatal(err)
			}
			// Batches of three: versions 1, 2 and 3 through record 9.
			var dump map[string]string
			for i := 0; i < 9; i += 3 {
				after := ""
				if i > 0 {
					after = string(recs[i-1].SequenceNumber)
				}
				if err := first.HandleBatch(ctx, "shard-0", streamtally.Seq(after), recs[i:i+3]); err != nil {
					t.Fatal(err)
				}
				if i == 3 {
					dump = f.snapshotKeys() // through record 6, version 2
				}
			}
			seen := map[int64]string{}
			var epoch string
			for range 3 {
				m := parseMessage(t, sub.next())
				seen[m.Version], epoch = m.Epoch, m.Epoch
			}
			if tc.lose {
				f.restoreKeys(dump)
			}

			next := aggregate.NewTally([]*aggregate.View{v}, f.store, discardLog())
			cp := recs[tc.checkpoint-1].SequenceNumber
			if _, _, err := next.OpenShard(ctx, "shard-0", cp, tc.takeover); err != nil {
				t.Fatal(err)
			}
			// Other batch boundaries than the first reader's.
			for i := tc.checkpoint; i < len(recs); i += 4 {
				after := recs[i-1].SequenceNumber
				if err := next.HandleBatch(ctx, "shard-0", after, recs[i:min(i+4, len(recs))]); err != nil {
					t.Fatal(err)
				}
			}
			if lost := next.Lost(); len(lost) != 0 {
				t.Fatalf("views lost: %v; the replay can repair the view", lost)
			}
			if got, want := f.state(v), scan(v, replayItems(recs), "platform"); !equalState(got, want) {
				t.Errorf("counters after the replay = %v, want the full scan %v", got, want)
			}
			for {
				select {
				case msg := <-sub.ch:
					m := parseMessage(t, msg.Payload)
					renewed := m.Epoch != epoch
					if renewed != tc.newEpoch {
						t.Errorf("version %d came in epoch %s after %s; want a new epoch: %v", m.Version, m.Epoch, epoch, tc.newEpoch)
					}
					if e, ok := seen[m.Version]; ok && e == m.Epoch {
						t.Errorf("version %d was issued twice in epoch %s", m.Version, e)
					}
					continue
				default:
				}
				break
			}
		})
	}
}

func equalState(a, b map[string]map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, x := range a {
		y := b[k]
		if len(x) != len(y) {
			return false
		}
		for g, v := range x {
			if y[g] != v {
				return false
			}
		}
	}
	return true
}

// Records trimmed before they were read, or a shard gone with records
// unread, leave every view incomplete: each is marked lost, with the
// reason and the repair.
func TestRecordsLostMarksEveryViewLost(t *testing.T) {
	ctx := context.Background()
	a, b := platformView("a"), sumOnlyView("b", "country")
	f := newFixture(t, a, b)
	tl := aggregate.NewTally([]*aggregate.View{a, b}, f.store, discardLog())
	if err := tl.RecordsLost(ctx, "shard-7", "records of shard shard-7 after 42 were trimmed"); err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{"a", "b"} {
		lost := f.meta(v)["lost"]
		if !strings.Contains(lost, "shard-7 after 42 were trimmed") || !strings.Contains(lost, "backfill") {
			t.Errorf("view %s: lost = %q, want the shard, the gap and the repair", v, lost)
		}
	}
	if len(tl.Lost()) != 2 {
		t.Errorf("Tally.Lost() = %v, want both views", tl.Lost())
	}
}
