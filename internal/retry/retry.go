// Package retry holds the one backoff every retry loop of the daemon waits
// with.
package retry

import (
	"context"
	"math/rand/v2"
	"time"
)

// Wait waits before retry attempt n (0-based): 100 ms doubling to a cap of
// 5 s, with equal jitter (half the delay fixed, half random), so that many
// shards retrying at once spread out yet none retries at once. It returns
// ctx's error if ctx ends first.
func Wait(ctx context.Context, n int) error {
	return wait(ctx, Delay(n, rand.Int64N))
}

// Delay is the wait before attempt n, jitter(k) returning a number in
// [0, k).
func Delay(n int, jitter func(int64) int64) time.Duration {
	d := 100 * time.Millisecond << min(n, 6) // 100ms .. 6.4s
	d = min(d, 5*time.Second)
	return time.Duration(jitter(int64(d)/2) + int64(d)/2)
}

// Sleep waits d; it reports false if ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool {
	return wait(ctx, d) == nil
}

func wait(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
