package publish

import (
	"context"
	"encoding/json"
	"maps"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/internal/ddbjson"
)

// dlqBatch is one GetRecords page as DynamoDB Streams sends it: good
// records, bad data for both views, an item outside one view, and a
// record whose new image is not DynamoDB JSON.
const dlqBatch = `{"Records":[
{"eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":1700000001,"Keys":{"id":{"S":"a"}},"NewImage":{"id":{"S":"a"},"platform":{"S":"Web"},"country":{"S":"US"},"amount":{"N":"10.50"}},"SequenceNumber":"100"}},
{"eventName":"INSERT","dynamodb":{"ApproximateCreationDateTime":1700000002,"Keys":{"id":{"S":"b"}},"NewImage":{"id":{"S":"b"},"platform":{"NULL":true},"country":{"L":[]},"amount":{"N":"1"}},"SequenceNumber":"101"}},
{"eventName":"INSERT","dynamodb":{"Keys":{"id":{"S":"c"}},"NewImage":{"id":{"S":"c"},"country":{"S":"DE"},"amount":{"N":"3"}},"SequenceNumber":"102"}},
{"eventName":"MODIFY","dynamodb":{"Keys":{"id":{"S":"a"}},"OldImage":{"id":{"S":"a"},"platform":{"S":"Web"},"country":{"S":"US"},"amount":{"N":"10.50"}},"NewImage":{"id":{"S":"a"},"platform":{"S":"Web"},"country":{"S":"US"},"amount":{"N":"7"}},"SequenceNumber":"103"}},
{"eventName":"INSERT","dynamodb":{"Keys":{"id":{"S":"d"}},"NewImage":{"id":{"S":"d"},"platform":{"S":"Mail"},"country":{"S":"FR"},"amount":{"N":"1E+126"}},"SequenceNumber":"104"}},
{"eventName":"INSERT","dynamodb":{"Keys":{"id":{"S":"e"}},"NewImage":{"id":{"S":"e"},"platform":{"S":"Web"},"amount":{"N":"1","S":"1"}},"SequenceNumber":"105"}},
{"eventName":"REMOVE","dynamodb":{"Keys":{"id":{"S":"c"}},"OldImage":{"id":{"S":"c"},"country":{"S":"DE"},"amount":{"N":"3"}},"SequenceNumber":"106"}},
{"eventName":"INSERT","dynamodb":{"Keys":{"id":{"S":"f"}},"NewImage":{"id":{"S":"f"},"platform":{"S":"Phone"},"country":{"S":"US"},"amount":{"N":"2.25"}},"SequenceNumber":"107"}}
],"NextShardIterator":"it"}`

// dlqRecord is what the stream entry of a dead letter reads back as.
type dlqEntry struct {
	id     string
	fields map[string]string
}

func (f *fixture) deadLetters() []dlqEntry {
	f.t.Helper()
	msgs, err := f.c.XRange(context.Background(), DeadLetterKey(f.prefix), "-", "+").Result()
	if err != nil {
		f.t.Fatalf("XRANGE: %v", err)
	}
	out := make([]dlqEntry, len(msgs))
	for i, m := range msgs {
		out[i] = dlqEntry{id: m.ID, fields: map[string]string{}}
		for k, v := range m.Values {
			out[i].fields[k] = v.(string)
		}
	}
	return out
}

// dlqTally is a Tally on the fixture's store that keeps dead letters, at a
// fixed clock.
func (f *fixture) dlqTally(maxLen int64, views ...*aggregate.View) (*aggregate.Tally, *DeadLetters) {
	dl := NewDeadLetters(f.c, f.prefix, maxLen)
	dl.now = func() time.Time { return time.UnixMilli(1_800_000_000_000) }
	t := aggregate.NewTally(views, f.store, discardLog())
	t.SetDeadLetters(dl)
	return t, dl
}

func decodeBatch(t *testing.T) []streamtally.Record {
	t.Helper()
	recs, _, err := ddbjson.DecodeRecords([]byte(dlqBatch), "shard-9")
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

func TestDeadLettersAreKeptOncePerBadRecordPerViewBesideExactCounters(t *testing.T) {
	byPlatform, byCountry := platformView("by_platform"), sumOnlyView("by_country", "country")
	f := newFixture(t, byPlatform, byCountry)
	tally, _ := f.dlqTally(1000, byPlatform, byCountry)
	recs := decodeBatch(t)
	if err := tally.HandleBatch(context.Background(), "shard-9", "", recs); err != nil {
		t.Fatal(err)
	}

	got := map[string]dlqEntry{}
	for _, e := range f.deadLetters() {
		k := e.fields["view"] + "/" + e.fields["seq"]
		if _, dup := got[k]; dup {
			t.Errorf("dead letter %s kept twice", k)
		}
		got[k] = e
	}
	// c lacks a platform: outside by_platform, not bad data.
	want := []string{"by_country/101", "by_country/104", "by_country/105", "by_platform/101", "by_platform/104", "by_platform/105"}
	if keys := slices.Sorted(maps.Keys(got)); !slices.Equal(keys, want) {
		t.Fatalf("dead letters %q, want %q", keys, want)
	}
	for k, reason := range map[string]string{
		"by_platform/101": "bad_group_by", "by_country/101": "bad_group_by",
		"by_platform/104": "bad_number", "by_country/104": "bad_number",
		"by_platform/105": "bad_record", "by_country/105": "bad_record",
	} {
		if r := got[k].fields["reason"]; r != reason {
			t.Errorf("%s: reason %q, want %q", k, r, reason)
		}
	}

	// Every field of one entry, as the README documents it.
	b := got["by_platform/101"].fields
	checkField := func(name, want string) {
		t.Helper()
		if b[name] != want {
			t.Errorf("field %s = %q, want %q", name, b[name], want)
		}
	}
	checkField("view", "by_platform")
	checkField("shard", "shard-9")
	checkField("seq", "101")
	checkField("event", "INSERT")
	checkField("keys", `{"id":{"S":"b"}}`)
	checkField("ts_ms", "1800000000000")
	checkField("created_ms", "1700000002000")
	if !strings.Contains(b["detail"], "platform") || !strings.Contains(b["detail"], "NULL") {
		t.Errorf("detail %q does not say which attribute has which type", b["detail"])
	}
	var img struct{ OldImage, NewImage json.RawMessage }
	if err := json.Unmarshal([]byte(b["image"]), &img); err != nil || img.OldImage != nil {
		t.Fatalf("image %s: %v", b["image"], err)
	}
	if back, err := ddbjson.DecodeImage(img.NewImage); err != nil || !reflect.DeepEqual(back, recs[1].New) {
		t.Errorf("image does not decode to the record's new image: %s (%v)", img.NewImage, err)
	}
	if len(b) != 10 {
		t.Errorf("entry has fields %q, want the 10 documented", slices.Sorted(maps.Keys(b)))
	}
	// A record that could not be decoded is kept as it arrived.
	u := got["by_country/105"].fields
	if !strings.Contains(u["image"], `"amount":{"N":"1","S":"1"}`) || !json.Valid([]byte(u["image"])) || !strings.Contains(u["detail"], "two types") {
		t.Errorf("undecodable record kept as image %s, detail %q", u["image"], u["detail"])
	}

	// The good records of the batch are applied exactly.
	good := map[string]streamtally.Image{"a": item("a", "Web", "US", "7"), "f": item("f", "Phone", "US", "2.25")}
	if got, want := f.state(byPlatform), scan(byPlatform, good, "platform"); !maps.EqualFunc(got, want, maps.Equal) {
		t.Errorf("by_platform = %v, want %v", got, want)
	}
	if got, want := f.state(byCountry), scan(byCountry, good, "country"); !maps.EqualFunc(got, want, maps.Equal) {
		t.Errorf("by_country = %v, want %v", got, want)
	}
}

func TestReplayingABatchKeepsNoMoreDeadLettersAndNoDrift(t *testing.T) {
	byPlatform, byCountry := platformView("by_platform"), sumOnlyView("by_country", "country")
	f := newFixture(t, byPlatform, byCountry)
	first, _ := f.dlqTally(1000, byPlatform, byCountry)
	recs := decodeBatch(t)
	if err := first.HandleBatch(context.Background(), "shard-9", "", recs); err != nil {
		t.Fatal(err)
	}
	before := map[string]map[string]map[string]string{"p": f.state(byPlatform), "c": f.state(byCountry)}
	versions := []string{f.version("by_platform"), f.version("by_country")}
	letters := len(f.deadLetters())

	// A new process reads the batch again: the checkpoint was not written.
	again, _ := f.dlqTally(1000, byPlatform, byCountry)
	if err := again.HandleBatch(context.Background(), "shard-9", "", recs); err != nil {
		t.Fatal(err)
	}
	after := map[string]map[string]map[string]string{"p": f.state(byPlatform), "c": f.state(byCountry)}
	if !maps.EqualFunc(before, after, func(a, b map[string]map[string]string) bool { return maps.EqualFunc(a, b, maps.Equal) }) {
		t.Errorf("counters drifted on replay:\n%v\n%v", before, after)
	}
	if v := []string{f.version("by_platform"), f.version("by_country")}; !slices.Equal(v, versions) {
		t.Errorf("versions %v after replay, want %v", v, versions)
	}
	if n := len(f.deadLetters()); n != letters {
		t.Errorf("%d dead letters after replay, want %d: records behind the fence keep none", n, letters)
	}
}

func TestAFailedXAddFailsTheBatchBeforeAnythingIsApplied(t *testing.T) {
	v := platformView("by_platform")
	f := newFixture(t, v)
	tally, _ := f.dlqTally(1000, v)
	recs := decodeBatch(t)
	ctx := context.Background()
	// A key of the wrong type makes every XADD fail, as an outage would.
	if err := f.c.Set(ctx, DeadLetterKey(f.prefix), "not a stream", 0).Err(); err != nil {
		t.Fatal(err)
	}
	err := tally.HandleBatch(ctx, "shard-9", "", recs)
	if err == nil || !strings.Contains(err.Error(), "WRONGTYPE") || !strings.Contains(err.Error(), "shard-9") {
		t.Fatalf("HandleBatch = %v, want the XADD's error naming the shard", err)
	}
	if v := f.version("by_platform"); v != "" {
		t.Fatalf("version %q: the batch was applied although its dead letters were not kept", v)
	}
	if n := tally.Stats().Rejected.Load(); n != 0 {
		t.Errorf("%d rejections counted for a failed attempt", n)
	}

	// Redis is back: the reader hands the same batch again.
	if err := f.c.Del(ctx, DeadLetterKey(f.prefix)).Err(); err != nil {
		t.Fatal(err)
	}
	if err := tally.HandleBatch(ctx, "shard-9", "", recs); err != nil {
		t.Fatal(err)
	}
	if n := len(f.deadLetters()); n != 3 {
		t.Errorf("%d dead letters after the retry, want 3", n)
	}
	if v := f.version("by_platform"); v != "1" {
		t.Errorf("version %q after the retry, want 1", v)
	}
}

// letter is a rejection of a record with sequence number seq in view.
func letter(view, seq string) aggregate.Rejection {
	r := &streamtally.Record{Shard: "s", SequenceNumber: streamtally.Seq(seq), Event: streamtally.Insert, Keys: streamtally.Image{"id": &stringAttr{Value: seq}}}
	return aggregate.Rejection{View: view, Record: r, Reason: aggregate.Reason{Kind: aggregate.BadSum, Text: "t"}}
}

func TestDeadLettersTrimToAboutMaxLenKeepingTheNewest(t *testing.T) {
	f := newFixture(t)
	const maxLen = 100
	dl := NewDeadLetters(f.c, f.prefix, maxLen)
	ctx := context.Background()
	for b := 0; b < 10; b++ {
		batch := make([]aggregate.Rejection, 100)
		for i := range batch {
			batch[i] = letter("v", strconv.Itoa(b*100+i))
		}
		if err := dl.Add(ctx, batch); err != nil {
			t.Fatal(err)
		}
	}
	// "MAXLEN ~" trims whole stream nodes only, so up to one node's worth
	// more than maxLen stays.
	node, err := f.c.ConfigGet(ctx, "stream-node-max-entries").Result()
	if err != nil {
		t.Fatal(err)
	}
	perNode, _ := strconv.Atoi(node["stream-node-max-entries"])
	n, err := f.c.XLen(ctx, DeadLetterKey(f.prefix)).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n < maxLen || n >= int64(maxLen+perNode) {
		t.Fatalf("XLEN = %d after 1000 letters, want %d to %d", n, maxLen, maxLen+perNode-1)
	}
	newest, err := dl.List(ctx, "", 1)
	if err != nil || len(newest) != 1 || newest[0].Seq != "999" {
		t.Fatalf("newest letter %+v (%v), want seq 999", newest, err)
	}
}

func TestListIsNewestFirstOncePerRecordAndFiltersByView(t *testing.T) {
	f := newFixture(t)
	dl := NewDeadLetters(f.c, f.prefix, 10_000)
	ctx := context.Background()
	add := func(ls ...aggregate.Rejection) {
		t.Helper()
		if err := dl.Add(ctx, ls); err != nil {
			t.Fatal(err)
		}
	}
	add(letter("v1", "1"), letter("v1", "2"), letter("v2", "1"))
	add(letter("v1", "1")) // a replay after a crash keeps it again
	list := func(view string, limit int) []string {
		t.Helper()
		ls, err := dl.List(ctx, view, limit)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, l := range ls {
			out = append(out, l.View+"/"+l.Seq)
		}
		return out
	}
	if got, want := list("", 10), []string{"v1/1", "v2/1", "v1/2"}; !slices.Equal(got, want) {
		t.Errorf("List = %q, want %q", got, want)
	}
	if got, want := list("v1", 10), []string{"v1/1", "v1/2"}; !slices.Equal(got, want) {
		t.Errorf("List(v1) = %q, want %q", got, want)
	}
	if got, want := list("", 2), []string{"v1/1", "v2/1"}; !slices.Equal(got, want) {
		t.Errorf("List(limit 2) = %q, want %q", got, want)
	}

	// Across pages of the stream: 1200 entries, every record twice.
	for round := 0; round < 2; round++ {
		batch := make([]aggregate.Rejection, 600)
		for i := range batch {
			batch[i] = letter("v3", strconv.Itoa(1000+i))
		}
		add(batch...)
	}
	got := list("v3", 5000)
	if len(got) != 600 || got[0] != "v3/1599" || got[599] != "v3/1000" {
		t.Errorf("List(v3) has %d letters from %v to %v, want 600 from v3/1599 to v3/1000", len(got), got[:1], got[len(got)-1:])
	}
	if all := list("", 5000); len(all) != 603 {
		t.Errorf("List has %d letters, want 603", len(all))
	}
}
