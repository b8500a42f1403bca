package publish

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/internal/testenv"
)

// TestRedisDown: while Redis is down every call returns an error (not a
// panic, and never a FenceMovedError, which would make Tally refold instead
// of retrying); once it is back, Apply works again, although the restarted
// server has lost the script cache.
func TestRedisDown(t *testing.T) {
	srv := testenv.NewRedis(t)
	c := redis.NewClient(&redis.Options{
		Addr:        srv.Addr(),
		DialTimeout: time.Second, ReadTimeout: time.Second, WriteTimeout: time.Second,
		MaxRetries: 1,
		// go-redis stops dialling for a while once PoolSize dials in a row
		// have failed; this test fails 6 at most, so the first Apply after
		// the restart must connect.
		PoolSize: 10,
	})
	t.Cleanup(func() { c.Close() })
	v := platformView("by_platform")
	store := NewRedis(c, testPrefix(t), []*aggregate.View{v})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// Loads the script into the server's cache.
	if err := store.Apply(ctx, mkDelta(v, "s", "", "1", map[string]gd{"Web": {1, []string{"1.5"}}})); err != nil {
		t.Fatalf("Apply before the outage: %v", err)
	}

	srv.Stop()
	start := time.Now()
	err := store.Apply(ctx, mkDelta(v, "s", "1", "2", map[string]gd{"Web": {1, []string{"2"}}}))
	if err == nil {
		t.Fatal("Apply with Redis down succeeded")
	}
	var moved *aggregate.FenceMovedError
	if errors.As(err, &moved) {
		t.Fatalf("Apply with Redis down returned FenceMovedError: %v", err)
	}
	t.Logf("Apply with Redis down: %v (after %v)", err, time.Since(start).Round(time.Millisecond))
	if _, err := store.Fences(ctx, "s"); err == nil {
		t.Error("Fences with Redis down succeeded")
	}
	if _, err := store.Snapshot(ctx, v); err == nil {
		t.Error("Snapshot with Redis down succeeded")
	}

	// The server comes back empty (no persistence) and without the script.
	srv.Start()
	if err := store.Apply(ctx, mkDelta(v, "s", "", "2", map[string]gd{"Web": {1, []string{"2"}}})); err != nil {
		t.Fatalf("Apply after the restart: %v", err)
	}
	s, err := store.Snapshot(ctx, v)
	if err != nil {
		t.Fatalf("Snapshot after the restart: %v", err)
	}
	if s.Version != 1 || s.Measures["amount"]["Web"] != "2" || s.Measures["donations"]["Web"] != "1" {
		t.Errorf("snapshot after the restart = %+v, want version 1, Web 2 / 1", s)
	}
	fences, err := store.Fences(ctx, "s")
	if err != nil || fences[v.Name].Seq != "2" {
		t.Errorf("Fences after the restart = %v, %v; want by_platform=2", fences, err)
	}
}
