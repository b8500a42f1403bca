package consumer

import (
	"testing"
	"time"

	"github.com/streamtally/streamtally/lease"
)

func TestShortDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0:                             "0ms",
		850 * time.Millisecond:        "850ms",
		7249 * time.Millisecond:       "7.2s",
		9999 * time.Millisecond:       "9.9s",
		42 * time.Second:              "42s",
		3 * time.Minute:               "3m",
		3*time.Minute + 5*time.Second: "3m5s",
		2*time.Hour + 5*time.Minute:   "2h5m",
		27 * time.Hour:                "1d3h",
		48*time.Hour + 59*time.Minute: "2d",
	} {
		if got := shortDuration(d); got != want {
			t.Errorf("shortDuration(%v) = %q, want %q", d, got, want)
		}
	}
	for cp, want := range map[string]string{
		"":                             "-",
		lease.ShardEnd:                 lease.ShardEnd,
		"000000000000000000042":        "000000000042",
		"4965592000000000001234567890": "001234567890",
		"123456789012":                 "123456789012",
	} {
		if got := shortCheckpoint(cp); got != want {
			t.Errorf("shortCheckpoint(%q) = %q, want %q", cp, got, want)
		}
	}
}
