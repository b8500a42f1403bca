package publish

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/internal/ddbjson"
)

// DeadLetterKey is the stream that keeps the records views set aside as
// bad data. It is one key outside every view's hash tag: in a cluster it
// lives on one node, and no apply script touches it.
func DeadLetterKey(prefix string) string { return prefix + ":dlq" }

// DeadLetters keeps dead letters on a Redis stream, trimmed to about
// maxLen entries. It implements aggregate.DeadLetters.
type DeadLetters struct {
	client redis.UniversalClient
	key    string
	maxLen int64
	now    func() time.Time
}

// NewDeadLetters returns the dead-letter stream under prefix; maxLen must
// be positive.
func NewDeadLetters(client redis.UniversalClient, prefix string, maxLen int64) *DeadLetters {
	return &DeadLetters{client: client, key: DeadLetterKey(prefix), maxLen: maxLen, now: time.Now}
}

// Add implements aggregate.DeadLetters: one XADD per letter, all in one
// round trip. The approximate MAXLEN lets Redis trim whole blocks of the
// stream, which costs next to nothing.
func (q *DeadLetters) Add(ctx context.Context, letters []aggregate.Rejection) error {
	ts := q.now().UnixMilli()
	cmds := make([]*redis.StringCmd, len(letters))
	_, err := q.client.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, l := range letters {
			cmds[i] = p.XAdd(ctx, &redis.XAddArgs{Stream: q.key, MaxLen: q.maxLen, Approx: true, Values: fields(l, ts)})
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("XADD %s: %w", q.key, err)
	}
	return nil
}

// fields is one stream entry, in the order the README documents.
func fields(l aggregate.Rejection, ts int64) []any {
	r := l.Record
	created := int64(0)
	if !r.Created.IsZero() {
		created = r.Created.UnixMilli()
	}
	return []any{
		"view", l.View,
		"shard", r.Shard,
		"seq", string(r.SequenceNumber),
		"event", r.Event.String(),
		"keys", imageJSON(r.Keys),
		"reason", l.Reason.Kind,
		"detail", l.Reason.Text,
		"image", imagesJSON(r),
		"ts_ms", ts,
		"created_ms", created,
	}
}

// imagesJSON is the record's images as they arrived: {"OldImage":…,
// "NewImage":…} in DynamoDB JSON, or for a record that could not be
// decoded, the whole record as read.
func imagesJSON(r *streamtally.Record) string {
	if r.Malformed != nil {
		return string(r.Malformed.Raw)
	}
	b := []byte{'{'}
	for _, part := range []struct {
		name string
		img  streamtally.Image
	}{{"OldImage", r.Old}, {"NewImage", r.New}} {
		if part.img == nil {
			continue
		}
		if len(b) > 1 {
			b = append(b, ',')
		}
		b = append(b, `"`+part.name+`":`...)
		b = append(b, imageJSON(part.img)...)
	}
	return string(append(b, '}'))
}

// imageJSON encodes an image; one the codec cannot write (an attribute type
// newer than this build) is kept as the reason why, so that the letter is
// kept all the same.
func imageJSON(img streamtally.Image) string {
	b, err := ddbjson.EncodeImage(img)
	if err != nil {
		q, _ := json.Marshal(map[string]string{"error": err.Error()})
		return string(q)
	}
	return string(b)
}

// DeadLetter is one entry of the dead-letter stream.
type DeadLetter struct {
	ID        string          `json:"id"`
	TsMS      int64           `json:"ts_ms"`
	CreatedMS int64           `json:"created_ms"`
	View      string          `json:"view"`
	Shard     string          `json:"shard"`
	Seq       string          `json:"seq"`
	Event     string          `json:"event"`
	Keys      json.RawMessage `json:"keys"`
	Reason    string          `json:"reason"`
	Detail    string          `json:"detail"`
	Image     json.RawMessage `json:"image"`
}

// List returns up to limit dead letters, newest first, of one view or of
// all if view is empty. A record kept twice (a replay after a crash) is
// listed once, as its newest entry.
func (q *DeadLetters) List(ctx context.Context, view string, limit int) ([]DeadLetter, error) {
	const page = 500
	type id struct{ view, shard, seq string }
	seen := map[id]bool{}
	var out []DeadLetter
	end := "+"
	for len(out) < limit {
		msgs, err := q.client.XRevRangeN(ctx, q.key, end, "-", page).Result()
		if err != nil {
			return nil, fmt.Errorf("XREVRANGE %s: %w", q.key, err)
		}
		for _, m := range msgs {
			l := parseLetter(m)
			k := id{l.View, l.Shard, l.Seq}
			if (view != "" && l.View != view) || seen[k] {
				continue
			}
			seen[k] = true
			out = append(out, l)
			if len(out) == limit {
				break
			}
		}
		if len(msgs) < page {
			break
		}
		end = "(" + msgs[len(msgs)-1].ID
	}
	return out, nil
}

func parseLetter(m redis.XMessage) DeadLetter {
	str := func(k string) string { s, _ := m.Values[k].(string); return s }
	num := func(k string) int64 { n, _ := strconv.ParseInt(str(k), 10, 64); return n }
	return DeadLetter{
		ID: m.ID, TsMS: num("ts_ms"), CreatedMS: num("created_ms"),
		View: str("view"), Shard: str("shard"), Seq: str("seq"), Event: str("event"),
		Keys: rawJSON(str("keys")), Reason: str("reason"), Detail: str("detail"), Image: rawJSON(str("image")),
	}
}

// rawJSON passes JSON through and quotes anything else, so that an entry
// written by hand cannot break a listing.
func rawJSON(s string) json.RawMessage {
	if json.Valid([]byte(s)) {
		return json.RawMessage(s)
	}
	q, _ := json.Marshal(s)
	return q
}
