package publish

import (
	"encoding/json"
	"strings"
	"testing"
)

func TestDLQTableKeepsEachLetterOnOneLine(t *testing.T) {
	letters := []DeadLetter{{
		TsMS: 1_700_000_000_000, View: "v", Shard: "shardId-1", Seq: "42", Event: "INSERT",
		Keys:   json.RawMessage(`{"email":{"S":"a\tb@example.org"}}`),
		Reason: "bad_group_by", Detail: "group_by attribute \"plat\nform\" has unsupported type L",
	}, {
		TsMS: 1_700_000_001_000, View: "v", Shard: "shardId-1", Seq: "43", Event: "UNKNOWN",
		Keys: json.RawMessage(`null`), Reason: "bad_record",
	}}
	var b strings.Builder
	if err := WriteDeadLetterTable(&b, "tally:dlq", letters, 2, true); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(b.String(), "\n"), "\n")
	want := []string{"dlq.max_len is 0", "TIME", "2023-11-14T22:13:20Z", "2023-11-14T22:13:21Z", "newest 2 shown"}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, want %d:\n%s", len(lines), len(want), b.String())
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d = %q, want it to start with %q", i, lines[i], w)
		}
	}
	if !strings.Contains(lines[2], "email=a b@example.org") || !strings.Contains(lines[2], `"plat form"`) {
		t.Errorf("row %q: keys or detail not on one line", lines[2])
	}
	if f := strings.Fields(lines[3]); f[5] != "null" || f[len(f)-1] != "-" {
		t.Errorf("row %q: want null keys and - for no detail", lines[3])
	}

	b.Reset()
	if err := WriteDeadLetterTable(&b, "tally:dlq", nil, 50, false); err != nil || b.String() != "no dead letters in tally:dlq\n" {
		t.Errorf("empty stream: %q (%v)", b.String(), err)
	}
}
