package recount

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"golang.org/x/time/rate"

	"github.com/streamtally/streamtally"
	"github.com/streamtally/streamtally/internal/ddbjson"
)

// scanTable reads every item of the table with a parallel Scan and hands
// each to add with its key. Reads are strongly consistent: an eventually
// consistent read could return an image older than a record at or before
// the cut, which the state-at-cut rule would then count as current. The
// rate limit spreads the reads so that production traffic keeps its
// capacity.
func (s *Recounter) scanTable(ctx context.Context, keys []string, o Options, add func(key string, img streamtally.Image)) (int64, error) {
	var lim *rate.Limiter
	if o.Rate > 0 {
		// A page is asked for only once the bucket holds it, so a page
		// never exceeds the burst.
		burst := max(1, min(int(o.PageSize), int(o.Rate)))
		lim = rate.NewLimiter(rate.Limit(o.Rate), burst)
	}
	page := o.PageSize
	if lim != nil && int(page) > lim.Burst() {
		page = int32(lim.Burst())
	}
	var read, pages atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		start := time.Now()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				s.progress("scan: %d items read in %s (%d pages, %d segments)", read.Load(), time.Since(start).Round(time.Second), pages.Load(), o.Segments)
			}
		}
	}()
	defer func() { close(done); wg.Wait() }()

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, o.Segments)
	var segs sync.WaitGroup
	for seg := 0; seg < o.Segments; seg++ {
		segs.Add(1)
		go func() {
			defer segs.Done()
			in := &dynamodb.ScanInput{
				TableName:      aws.String(s.Table),
				ConsistentRead: aws.Bool(true),
				Limit:          aws.Int32(page),
			}
			if o.Segments > 1 {
				in.Segment, in.TotalSegments = aws.Int32(int32(seg)), aws.Int32(int32(o.Segments))
			}
			for {
				if lim != nil {
					if err := lim.WaitN(ctx, int(page)); err != nil {
						errs <- err
						cancel()
						return
					}
				}
				out, err := s.DDB.Scan(ctx, in)
				if err != nil {
					errs <- fmt.Errorf("scan %s segment %d: %w", s.Table, seg, err)
					cancel()
					return
				}
				for _, it := range out.Items {
					img := ddbjson.FromItem(it)
					k, ok := itemKey(keys, img)
					if !ok {
						errs <- fmt.Errorf("scan %s: an item without a readable key", s.Table)
						cancel()
						return
					}
					add(k, img)
				}
				read.Add(int64(len(out.Items)))
				pages.Add(1)
				if len(out.LastEvaluatedKey) == 0 {
					return
				}
				in.ExclusiveStartKey = out.LastEvaluatedKey
			}
		}()
	}
	segs.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return read.Load(), err
	}
	s.progress("scan: done, %d items read (%d pages, %d segments)", read.Load(), pages.Load(), o.Segments)
	return read.Load(), nil
}
