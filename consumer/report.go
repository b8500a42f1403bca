package consumer

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/streamtally/streamtally/lease"
)

// Report is what `streamtally status` prints: every shard with its lease
// and lag, and the live workers, at one moment.
type Report struct {
	Stream     string // the stream's ARN
	LeaseTable string
	At         time.Time
	Shards     []ShardStatus
	Workers    []string // live workers, sorted
}

// NewReport gathers what Status returned.
func NewReport(stream, leaseTable string, at time.Time, shards []ShardStatus, workers map[string]bool) *Report {
	live := make([]string, 0, len(workers))
	for w := range workers {
		live = append(live, w)
	}
	slices.Sort(live)
	return &Report{Stream: stream, LeaseTable: leaseTable, At: at, Shards: shards, Workers: live}
}

// Err names, in one line, the shards whose lag could not be measured; nil
// when every lag is known.
func (r *Report) Err() error {
	var failed []string
	for _, s := range r.Shards {
		if s.LagErr != nil {
			failed = append(failed, s.LagErr.Error())
		}
	}
	n := len(failed)
	if n == 0 {
		return nil
	}
	if n > 3 {
		failed = append(failed[:3], fmt.Sprintf("and %d more", n-3))
	}
	return fmt.Errorf("status: lag of %d shard(s) unknown: %s", n, strings.Join(failed, "; "))
}

// WriteTable prints one line per shard, then the live workers.
func (r *Report) WriteTable(w io.Writer) error {
	now, live := r.At, r.Workers
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tPARENT\tSTATE\tOWNER\tCHECKPOINT\tLAG\tLEASE")
	for _, s := range r.Shards {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n",
			s.Shard, dash(s.Parent), s.State, dash(s.Owner), checkpointText(s), lagText(s), leaseText(s, now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(live) == 0 {
		_, err := fmt.Fprintln(w, "live workers: none")
		return err
	}
	_, err := fmt.Fprintf(w, "live workers (%d): %s\n", len(live), strings.Join(live, ", "))
	return err
}

type statusJSON struct {
	Stream     string            `json:"stream"`
	LeaseTable string            `json:"lease_table"`
	At         time.Time         `json:"at"`
	Shards     []shardStatusJSON `json:"shards"`
	Workers    []string          `json:"live_workers"`
}

type shardStatusJSON struct {
	Shard            string     `json:"shard"`
	Parent           string     `json:"parent"`
	State            string     `json:"state"`
	Leased           bool       `json:"leased"`
	Owner            string     `json:"owner"`
	Checkpoint       string     `json:"checkpoint"`
	StartedAt        *time.Time `json:"started_at"`         // a LATEST start; null otherwise
	LeaseTimeout     *time.Time `json:"lease_timeout"`      // null without an owner
	LeaseRemainingMS *int64     `json:"lease_remaining_ms"` // negative once expired
	LagMS            *int64     `json:"lag_ms"`             // null when not measured
	Oldest           *time.Time `json:"oldest_unprocessed"` // null when nothing waits
	LagError         string     `json:"lag_error,omitempty"`
}

// WriteJSON prints the report as one JSON document.
func (r *Report) WriteJSON(w io.Writer) error {
	now := r.At
	out := statusJSON{Stream: r.Stream, LeaseTable: r.LeaseTable, At: now.UTC(), Shards: make([]shardStatusJSON, 0, len(r.Shards)), Workers: r.Workers}
	for _, s := range r.Shards {
		j := shardStatusJSON{Shard: s.Shard, Parent: s.Parent, State: string(s.State), Leased: s.Leased, Owner: s.Owner, Checkpoint: s.Checkpoint}
		if !s.StartedAt.IsZero() {
			t := s.StartedAt.UTC()
			j.StartedAt = &t
		}
		if !s.LeaseTimeout.IsZero() {
			t := s.LeaseTimeout.UTC()
			ms := s.LeaseTimeout.Sub(now).Milliseconds()
			j.LeaseTimeout, j.LeaseRemainingMS = &t, &ms
		}
		if s.Measured {
			ms := s.Lag.Milliseconds()
			j.LagMS = &ms
		}
		if s.Waiting() {
			t := s.Oldest.UTC()
			j.Oldest = &t
		}
		if s.LagErr != nil {
			j.LagError = s.LagErr.Error()
		}
		out.Shards = append(out.Shards, j)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// shortCheckpoint keeps the last 12 digits of a sequence number: enough to
// tell positions in a shard apart and to watch them advance.
func shortCheckpoint(cp string) string {
	if len(cp) > 12 && cp != lease.ShardEnd {
		return cp[len(cp)-12:]
	}
	return dash(cp)
}

// checkpointText is the checkpoint, or for a shard started at LATEST and
// not checkpointed yet, when it started: the reader counts from there.
func checkpointText(s ShardStatus) string {
	if s.Checkpoint == "" && !s.StartedAt.IsZero() {
		return "latest@" + s.StartedAt.UTC().Format("15:04:05Z")
	}
	return shortCheckpoint(s.Checkpoint)
}

func lagText(s ShardStatus) string {
	switch {
	case s.LagErr != nil:
		return "?"
	case !s.Measured:
		return "-"
	case !s.Waiting():
		return "0s"
	case s.Lag < time.Millisecond:
		return "<1ms" // a record waits: never "0s", which means caught up
	}
	return shortDuration(s.Lag)
}

func leaseText(s ShardStatus, now time.Time) string {
	switch {
	case s.Owner == "" || s.LeaseTimeout.IsZero():
		return "-"
	case s.LeaseTimeout.After(now):
		return shortDuration(s.LeaseTimeout.Sub(now))
	}
	return "expired " + shortDuration(now.Sub(s.LeaseTimeout)) + " ago"
}

// shortDuration prints d with two significant units at most: 850ms, 7.2s,
// 42s, 3m5s, 2h5m, 3d4h.
func shortDuration(d time.Duration) string {
	two := func(n1 int64, u1 string, n2 int64, u2 string) string {
		if n2 == 0 {
			return fmt.Sprintf("%d%s", n1, u1)
		}
		return fmt.Sprintf("%d%s%d%s", n1, u1, n2, u2)
	}
	switch {
	case d < time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	case d < 10*time.Second:
		// Truncated to 0.1s so that it never reads 10.0s.
		return fmt.Sprintf("%.1fs", math.Floor(d.Seconds()*10)/10)
	case d < time.Minute:
		return fmt.Sprintf("%ds", int64(d/time.Second))
	case d < time.Hour:
		return two(int64(d/time.Minute), "m", int64(d%time.Minute/time.Second), "s")
	case d < 24*time.Hour:
		return two(int64(d/time.Hour), "h", int64(d%time.Hour/time.Minute), "m")
	}
	return two(int64(d/(24*time.Hour)), "d", int64(d%(24*time.Hour)/time.Hour), "h")
}
