package publish

import (
	"context"
	"fmt"
	"strconv"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
)

// Snapshot is a consistent view of all of one view's measures.
type Snapshot struct {
	View      string                       `json:"view"`
	Version   int64                        `json:"version"`
	UpdatedMS int64                        `json:"updated_ms"`
	Measures  map[string]map[string]string `json:"measures"`
	// Lost, when set, says why the view's counters are incomplete.
	Lost string `json:"lost,omitempty"`
}

// Snapshot reads every measure hash and the version of view in one
// MULTI/EXEC, so the numbers and the version belong together: no script
// can run between the reads.
func (r *Redis) Snapshot(ctx context.Context, view *aggregate.View) (*Snapshot, error) {
	k := KeysFor(r.prefix, view.Name)
	hashes := make([]*redis.MapStringStringCmd, len(view.Measures))
	var meta *redis.SliceCmd
	_, err := r.client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		meta = p.HMGet(ctx, k.Meta(), "version", "updated_ms", lostField)
		for i, m := range view.Measures {
			hashes[i] = p.HGetAll(ctx, k.Measure(m.Name))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("snapshot of view %s: %w", view.Name, err)
	}
	s := &Snapshot{View: view.Name, Measures: make(map[string]map[string]string, len(view.Measures))}
	vals := meta.Val()
	s.Version = atoi(vals[0])
	s.UpdatedMS = atoi(vals[1])
	s.Lost, _ = vals[2].(string)
	for i, m := range view.Measures {
		s.Measures[m.Name] = hashes[i].Val()
	}
	return s, nil
}

func atoi(v any) int64 {
	s, _ := v.(string)
	n, _ := strconv.ParseInt(s, 10, 64)
	return n
}
