package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/internal/ddbjson"
	"github.com/streamtally/streamtally/internal/loadgen"
	"github.com/streamtally/streamtally/publish"
)

// dlqLine is one line of `streamtally dlq --json`.
type dlqLine struct {
	View, Shard, Seq, Event, Reason, Detail string
	Keys, Image                             json.RawMessage
	TsMS                                    int64 `json:"ts_ms"`
}

func (e *env) deadLetters(cfg string, args ...string) []dlqLine {
	e.t.Helper()
	out, code := runBinary(e.t, append([]string{"dlq", "--config", cfg, "--json", "--limit", "100000"}, args...)...)
	if code != 0 {
		e.t.Fatalf("dlq --json: exit %d: %s", code, out)
	}
	var lines []dlqLine
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		var d dlqLine
		if err := json.Unmarshal([]byte(l), &d); err != nil {
			e.t.Fatalf("dlq --json line %q: %v", l, err)
		}
		lines = append(lines, d)
	}
	return lines
}

// TestDLQListsTheBadRecordsLoadgenWrote runs the daemon under a load with
// bad records of every kind loadgen writes: the counters must stay exact,
// and `streamtally dlq` must list, for every view, exactly the items
// written with bad data, each record once, and none that were merely
// outside a view.
func TestDLQListsTheBadRecordsLoadgenWrote(t *testing.T) {
	e := newEnv(t)
	e.createTable()
	d := e.start("w1")
	counts, err := loadgen.Run(context.Background(), e.ddb, e.table, loadgen.Options{Ops: 1200, Writers: 2, Seed: 41, BadRate: 0.15})
	if err != nil {
		t.Fatal(err)
	}
	want := slices.Sorted(slices.Values(counts.DeadLetterEmails()))
	t.Logf("load: %s; %d items with bad data", counts, len(want))
	if len(want) == 0 || int64(len(want)) == counts.Bad.Load() {
		t.Fatalf("the load wrote %d items with bad data of %d bad records: want both kinds", len(want), counts.Bad.Load())
	}
	e.waitExact(60 * time.Second)

	cfg := e.config("w1", "")
	var letters []dlqLine
	emails := func(view string) []string {
		var out []string
		for _, l := range letters {
			if l.View == view {
				img, err := ddbjson.DecodeImage(l.Keys)
				if err != nil {
					t.Fatalf("keys %s: %v", l.Keys, err)
				}
				out = append(out, img["email"].(*streamtally.S).Value)
			}
		}
		slices.Sort(out)
		return slices.Compact(out)
	}
	waitFor(t, 30*time.Second, "every item with bad data in the dead letters of both views", func() bool {
		letters = e.deadLetters(cfg)
		return slices.Equal(emails("by_platform"), want) && slices.Equal(emails("amount_only"), want)
	})

	type id struct{ view, shard, seq string }
	seen := map[id]bool{}
	for _, l := range letters {
		k := id{l.View, l.Shard, l.Seq}
		if seen[k] {
			t.Errorf("record %v listed twice", k)
		}
		seen[k] = true
		var img struct{ NewImage map[string]map[string]any }
		if err := json.Unmarshal(l.Image, &img); err != nil {
			t.Fatalf("image %s: %v", l.Image, err)
		}
		wantReason := "bad_sum"
		if _, isList := img.NewImage["platform"]["L"]; isList {
			wantReason = "bad_group_by"
		}
		if l.Reason != wantReason || l.Detail == "" || l.TsMS == 0 || (l.Event != "INSERT" && l.Event != "MODIFY") {
			t.Errorf("letter %+v: want reason %s, a detail, a time and a write event", l, wantReason)
		}
	}
	if got := e.deadLetters(cfg, "--view", "amount_only"); len(got) != len(letters)/2 {
		t.Errorf("--view amount_only lists %d of %d letters", len(got), len(letters))
	}

	// One daemon, no crash: nothing was kept twice, and the metric
	// counted exactly what the stream holds.
	n, err := e.rdb.XLen(context.Background(), publish.DeadLetterKey(e.prefix)).Result()
	if err != nil {
		t.Fatal(err)
	}
	metric := 0.0
	for k, v := range scrape(t, e.metricsAddr("w1")) {
		if strings.HasPrefix(k, "streamtally_dead_letters_total{") {
			metric += v
		}
	}
	if n != int64(len(letters)) || metric != float64(n) {
		t.Errorf("XLEN %d, listed %d, streamtally_dead_letters_total %v: want all equal", n, len(letters), metric)
	}

	// The table for people.
	out, code := runBinary(t, "dlq", "--config", cfg, "--view", "by_platform", "--limit", "3")
	t.Logf("dlq --view by_platform --limit 3:\n%s", out)
	rows := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(rows) != 5 || !strings.HasPrefix(rows[0], "TIME") || !strings.Contains(rows[4], "newest 3 shown") {
		t.Fatalf("dlq table: exit %d:\n%s", code, out)
	}
	for _, r := range rows[1:4] {
		if !strings.Contains(r, "by_platform") || !strings.Contains(r, "email=donor") || !strings.Contains(r, "bad_") {
			t.Errorf("table row %q lacks the view, the key or the reason", r)
		}
	}
	for _, bad := range [][]string{{"--limit", "0"}, {"--view", "no_such_view"}} {
		if out, code := runBinary(t, append([]string{"dlq", "--config", cfg}, bad...)...); code != 2 {
			t.Errorf("dlq %v: exit %d, want 2: %s", bad, code, out)
		}
	}
	if code, _ := d.stop(); code != 0 {
		t.Fatalf("exit %d", code)
	}
}
