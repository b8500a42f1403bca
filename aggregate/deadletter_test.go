package aggregate

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/streamtally/streamtally"
)

// memLetters is an in-memory DeadLetters that notes, with every letter,
// how many applies the store had seen when it arrived.
type memLetters struct {
	mu      sync.Mutex
	store   *memStore
	letters []Rejection
	applied []int // store.applies() at the time of each letter
	err     error
}

func (m *memLetters) Add(_ context.Context, ls []Rejection) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return m.err
	}
	for _, l := range ls {
		m.letters = append(m.letters, l)
		m.applied = append(m.applied, len(m.store.applies()))
	}
	return nil
}

// keys lists the letters as view/seq/kind, in order.
func (m *memLetters) keys() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, l := range m.letters {
		out = append(out, l.View+"/"+string(l.Record.SequenceNumber)+"/"+l.Reason.Kind)
	}
	return out
}

func TestTallyKeepsBadDataAsDeadLettersBeforeApplying(t *testing.T) {
	v := newView("by_platform", []string{"platform"}, "n=count", "amount=sum(amount)")
	store := newMemStore()
	dl := &memLetters{store: store}
	tally := NewTally([]*View{v}, store, quietLog())
	tally.SetDeadLetters(dl)

	batch := numbered("s1", 1,
		insert(item("a", "Web", "5")),
		insert(item("b", "", "5")), // outside the view: counted, not kept
		insert(streamtally.Image{"email": attrS("c"), "platform": &streamtally.Null{Value: true}, "amount": attrN("1")}),
		insert(item("d", "Web", "1E+126")),
		modify(item("e", "Web", "1"), streamtally.Image{"email": attrS("e"), "platform": attrS("Web"), "amount": attrS("x")}),
		malformed(insert(nil)),
		insert(item("f", "Phone", "2")),
	)
	if err := tally.HandleBatch(context.Background(), "s1", "", batch); err != nil {
		t.Fatal(err)
	}
	wantLetters := []string{"by_platform/3/bad_group_by", "by_platform/4/bad_number", "by_platform/5/bad_sum", "by_platform/6/bad_record"}
	if got := dl.keys(); !slices.Equal(got, wantLetters) {
		t.Errorf("dead letters %q, want %q", got, wantLetters)
	}
	for i, n := range dl.applied {
		if n != 0 {
			t.Errorf("dead letter %d kept after %d applies, want before the batch's apply", i, n)
		}
	}
	if r := dl.letters[0]; r.Record != &batch[2] || r.Reason.Text == "" {
		t.Errorf("dead letter lacks its record or reason: %+v", r)
	}
	// The good records of the batch are applied exactly.
	checkGroups(t, v, store.totals["by_platform"], map[string]want{
		"Web":   {0, map[string]string{"amount": "4"}},
		"Phone": {1, map[string]string{"amount": "2"}},
	})
	wantStats := map[string]int64{
		"by_platform/missing_group_by": 1, "by_platform/bad_group_by": 1, "by_platform/bad_number": 1,
		"by_platform/bad_sum": 1, "by_platform/bad_record": 1,
	}
	if got := tally.Stats().RejectedBy(); !maps.Equal(got, wantStats) {
		t.Errorf("RejectedBy = %v, want %v", got, wantStats)
	}
}

func TestTallyFailsTheBatchWhenDeadLettersCannotBeKept(t *testing.T) {
	v := newView("by_platform", []string{"platform"}, "n=count")
	store := newMemStore()
	dl := &memLetters{store: store, err: errors.New("XADD: connection refused")}
	tally := NewTally([]*View{v}, store, quietLog())
	tally.SetDeadLetters(dl)
	batch := numbered("shard-0042", 1, insert(item("a", "Web", "")), insert(streamtally.Image{"platform": attrN("x")}))

	err := tally.HandleBatch(context.Background(), "shard-0042", "", batch)
	if !errors.Is(err, dl.err) {
		t.Fatalf("err = %v, want it to wrap %v", err, dl.err)
	}
	for _, w := range []string{"by_platform", "shard-0042", "dead letter"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not name %s", err, w)
		}
	}
	if n := len(store.applies()); n != 0 {
		t.Errorf("%d applies although the dead letters were not kept", n)
	}
	if n := tally.Stats().Rejected.Load(); n != 0 {
		t.Errorf("Stats.Rejected = %d after a failed attempt, want 0", n)
	}

	// The reader hands the same batch again once Redis is back.
	dl.mu.Lock()
	dl.err = nil
	dl.mu.Unlock()
	if err := tally.HandleBatch(context.Background(), "shard-0042", "", batch); err != nil {
		t.Fatal(err)
	}
	if got := dl.keys(); !slices.Equal(got, []string{"by_platform/2/bad_number"}) {
		t.Errorf("dead letters %q after the retry", got)
	}
	checkGroups(t, v, store.totals["by_platform"], map[string]want{"Web": {count: 1}})
	if n := tally.Stats().Rejected.Load(); n != 1 {
		t.Errorf("Stats.Rejected = %d, want 1", n)
	}
}

func TestTallyReportsABatchOnceWhenItsApplyIsRetried(t *testing.T) {
	v := newView("v", []string{"platform"}, "n=count")
	store := newMemStore()
	dl := &memLetters{store: store}
	tally := NewTally([]*View{v}, store, quietLog())
	tally.SetDeadLetters(dl)
	batch := numbered("s1", 1, insert(streamtally.Image{"platform": &streamtally.L{}}), insert(item("a", "Web", "")))

	setApplyErr := func(err error) {
		store.mu.Lock()
		store.applyErr = err
		store.mu.Unlock()
	}
	setApplyErr(errors.New("redis down"))
	for i := 0; i < 3; i++ {
		if err := tally.HandleBatch(context.Background(), "s1", "", batch); err == nil {
			t.Fatal("HandleBatch succeeded while Apply fails")
		}
	}
	if got := dl.keys(); !slices.Equal(got, []string{"v/1/bad_group_by"}) {
		t.Errorf("dead letters %q, want the bad record once", got)
	}
	if n := tally.Stats().Rejected.Load(); n != 1 {
		t.Errorf("Stats.Rejected = %d, want 1", n)
	}

	// The process dies; the next one reads the batch again past the fence
	// and keeps the letter again: at least once, never lost.
	next := NewTally([]*View{v}, store, quietLog())
	next.SetDeadLetters(dl)
	if err := next.HandleBatch(context.Background(), "s1", "", batch); err == nil {
		t.Fatal("HandleBatch succeeded while Apply fails")
	}
	setApplyErr(nil)
	if err := next.HandleBatch(context.Background(), "s1", "", batch); err != nil {
		t.Fatal(err)
	}
	if got := dl.keys(); !slices.Equal(got, []string{"v/1/bad_group_by", "v/1/bad_group_by"}) {
		t.Errorf("dead letters %q after a new process replayed the batch, want the record twice", got)
	}
	checkGroups(t, v, store.totals["v"], map[string]want{"Web": {count: 1}})
}

func TestTallyKeepsNoDeadLettersForRecordsBehindTheFence(t *testing.T) {
	v := newView("v", []string{"platform"}, "n=count")
	store := newMemStore()
	dl := &memLetters{store: store}
	tally := NewTally([]*View{v}, store, quietLog())
	tally.SetDeadLetters(dl)
	bad := streamtally.Image{"platform": &streamtally.Bool{}, "amount": attrS("x")}
	batch := numbered("s1", 1, insert(item("a", "Web", "")), insert(streamtally.Image{"platform": &streamtally.SS{}}), insert(bad))
	store.otherWorker(v, "s1", batch[:2])

	if err := tally.HandleBatch(context.Background(), "s1", "", batch); err != nil {
		t.Fatal(err)
	}
	// Record 2 is behind the fence another worker left; record 3 is fine
	// for a count-only view.
	if got := dl.keys(); len(got) != 0 {
		t.Errorf("dead letters %q, want none", got)
	}
}

// levelLog records the level of every log line by message and kind.
type levelLog struct {
	mu    sync.Mutex
	lines map[string]slog.Level
}

func (h *levelLog) Enabled(context.Context, slog.Level) bool { return true }
func (h *levelLog) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *levelLog) WithGroup(string) slog.Handler            { return h }
func (h *levelLog) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "kind" {
			h.lines[a.Value.String()] = r.Level
		}
		return true
	})
	return nil
}

func TestTallyLogsBadDataAsWarningsAndItemsOutsideTheViewAsDebug(t *testing.T) {
	v := newView("v", []string{"platform"}, "n=count", "amount=sum(amount)")
	h := &levelLog{lines: map[string]slog.Level{}}
	tally := NewTally([]*View{v}, newMemStore(), slog.New(h))
	batch := numbered("s1", 1, insert(item("a", "", "1")), insert(item("b", "Web", "")), insert(item("c", "Web", "x1")))
	if err := tally.HandleBatch(context.Background(), "s1", "", batch); err != nil {
		t.Fatal(err)
	}
	want := map[string]slog.Level{"missing_group_by": slog.LevelDebug, "missing_sum": slog.LevelDebug, "bad_number": slog.LevelWarn}
	if !maps.Equal(h.lines, want) {
		t.Errorf("log levels by kind %v, want %v", h.lines, want)
	}
}
