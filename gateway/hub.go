package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/publish"
)

// Hub keeps one Redis subscription per view, shared by every client of the
// gateway, and hands each client the view's events in version order.
type Hub struct {
	views map[string]*viewHub
	order []*viewHub
}

// hubOptions configures a Hub.
type hubOptions struct {
	Client  redis.UniversalClient
	Prefix  string
	Views   []*aggregate.View
	Buffer  int           // events queued per client before it is dropped
	History int           // deltas kept per view for clients that resume
	Check   time.Duration // how often a view's version in Redis is compared with the last delta's
	Log     *slog.Logger
	metrics *metrics
}

// newHub returns a hub for the views; Run starts its subscriptions.
func newHub(o hubOptions) *Hub {
	h := &Hub{views: map[string]*viewHub{}}
	store := publish.NewRedis(o.Client, o.Prefix, nil)
	for _, v := range o.Views {
		vh := &viewHub{
			view: v, keys: publish.KeysFor(o.Prefix, v.Name), store: store, client: o.Client,
			buffer: o.Buffer, history: o.History, check: o.Check,
			log:     o.Log.With("view", v.Name),
			clients: map[*client]struct{}{},
			metrics: o.metrics,
			deltas:  o.metrics.events.WithLabelValues(v.Name, "delta"),
			snaps:   o.metrics.events.WithLabelValues(v.Name, "snapshot"),
			drops:   o.metrics.dropped.WithLabelValues(v.Name),
		}
		h.views[v.Name] = vh
		h.order = append(h.order, vh)
	}
	return h
}

// Run keeps every view's subscription until ctx ends.
func (h *Hub) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, vh := range h.order {
		wg.Add(1)
		go func() {
			defer wg.Done()
			vh.run(ctx)
		}()
	}
	wg.Wait()
}

// sink is where one connection's events queue: one view's, or several
// views' on a multiplexed stream. Hubs send without blocking; a hub that
// finds the queue full drops the whole connection, and the browser
// resumes with Last-Event-ID.
type sink struct {
	ch   chan *event
	done chan struct{} // closed when a hub drops the connection
	once sync.Once
	// kick unblocks the connection's writer, which may be stuck in a write
	// to a peer that reads nothing.
	kick func()
}

func newSink(size int, kick func()) *sink {
	return &sink{ch: make(chan *event, size), done: make(chan struct{}), kick: kick}
}

func (s *sink) drop() {
	s.once.Do(func() {
		close(s.done)
		if s.kick != nil {
			s.kick()
		}
	})
}

func (s *sink) dropped() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

// position is where a client's state of one view is: a version within
// an epoch. Versions of different epochs say nothing about each other.
type position struct {
	version int64
	epoch   string
}

// client is one view's subscription on a sink.
type client struct {
	sink  *sink
	have  int64  // the version the client's state is at, after the events queued
	epoch string // the epoch have counts in
	hub   *viewHub
	// span is the range a client of a bucketed view asked for; nil for
	// totals and for the live default range, whose snapshot the hub
	// caches and shares.
	span *span
}

// Join subscribes sink to view. With a resume version >= 0 (its
// Last-Event-ID) in the view's current epoch the client gets the deltas
// after that version if the hub still holds them; otherwise, and without
// resume, its first event is a snapshot. sp is the range of buckets of a
// bucketed view, nil for the live default.
func (h *Hub) Join(ctx context.Context, view string, resume position, sp *span, s *sink) (*client, error) {
	vh := h.views[view]
	if vh == nil {
		return nil, fmt.Errorf("no view %s", view)
	}
	return vh.join(ctx, resume, sp, s)
}

// Leave unsubscribes c; the hub sends it nothing more.
func (h *Hub) Leave(c *client) {
	vh := c.hub
	vh.mu.Lock()
	delete(vh.clients, c)
	vh.mu.Unlock()
}

// Ready reports whether every view's subscription is up and synced with
// a snapshot, so that clients get every delta from now on.
func (h *Hub) Ready() bool {
	for _, vh := range h.order {
		vh.mu.Lock()
		ok := vh.synced
		vh.mu.Unlock()
		if !ok {
			return false
		}
	}
	return true
}

// Clients counts the clients of every view.
func (h *Hub) Clients() int {
	n := 0
	for _, vh := range h.order {
		vh.mu.Lock()
		n += len(vh.clients)
		vh.mu.Unlock()
	}
	return n
}

type viewHub struct {
	view    *aggregate.View
	keys    publish.Keys
	store   *publish.Redis
	client  redis.UniversalClient
	buffer  int
	history int
	check   time.Duration
	log     *slog.Logger
	metrics *metrics
	// Counters resolved once: the fan-out counts every event it queues.
	deltas, snaps, drops prometheus.Counter

	// fetchMu lets one joining client read a snapshot at a time; the others
	// then find it cached, so a thousand reconnecting browsers cost Redis
	// one snapshot, not a thousand.
	fetchMu sync.Mutex

	mu      sync.Mutex
	synced  bool     // the subscription is up and last is from this subscription
	epoch   string   // the epoch of last
	left    []string // epochs the view moved on from: their late messages are stale
	last    int64    // newest version delivered
	ring    []*event // deltas up to last, contiguous versions, oldest first
	snap    *event   // newest snapshot read
	lost    string   // the lost mark of the hub's last snapshot
	clients map[*client]struct{}
}

// run keeps the subscription up: on any failure it subscribes again and
// heals with a fresh snapshot.
func (h *viewHub) run(ctx context.Context) {
	backoff := 100 * time.Millisecond
	for {
		err := h.session(ctx)
		h.mu.Lock()
		h.synced = false
		h.mu.Unlock()
		if ctx.Err() != nil {
			return
		}
		h.log.Warn("view subscription failed; subscribing again", "err", err, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

func (h *viewHub) subscribe(ctx context.Context) *redis.PubSub {
	// On a cluster the daemon publishes with SPUBLISH, which only a
	// sharded subscription on the view's node receives.
	if cc, ok := h.client.(*redis.ClusterClient); ok {
		return cc.SSubscribe(ctx, h.keys.Channel())
	}
	return h.client.Subscribe(ctx, h.keys.Channel())
}

// session subscribes first and reads the snapshot second, so that no
// version falls between them: messages that arrive meanwhile wait in the
// subscription's channel and those the snapshot already holds are dropped.
func (h *viewHub) session(ctx context.Context) error {
	ps := h.subscribe(ctx)
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		return fmt.Errorf("subscribe to %s: %w", h.keys.Channel(), err)
	}
	msgs := ps.Channel(redis.WithChannelSize(4096))
	if err := h.resync(ctx, "subscribed", 0); err != nil {
		return err
	}
	tick := time.NewTicker(h.check)
	defer tick.Stop()
	var ahead int64 // a version Redis had at the last check that no message had brought yet
	for {
		select {
		case <-ctx.Done():
			return nil
		case m, ok := <-msgs:
			if !ok {
				return errors.New("subscription closed")
			}
			if err := h.onMessage(ctx, m.Payload); err != nil {
				return err
			}
		case <-tick.C:
			// Pub/sub loses messages silently when a connection drops; a
			// lost last message shows as no gap until the next one. So the
			// version in Redis is checked too: one still ahead of the
			// deliveries a whole interval later was lost.
			// A view marked lost publishes nothing, so the mark is looked
			// for here as well.
			meta, err := h.client.HMGet(ctx, h.keys.Meta(), "version", "lost", "epoch").Result()
			if err != nil {
				return fmt.Errorf("read version of view %s: %w", h.view.Name, err)
			}
			vs, _ := meta[0].(string)
			v, _ := strconv.ParseInt(vs, 10, 64)
			lost, _ := meta[1].(string)
			epoch, _ := meta[2].(string)
			h.mu.Lock()
			last, wasLost, was := h.last, h.lost, h.epoch
			h.mu.Unlock()
			switch {
			case lost != "" && wasLost == "":
				if err := h.resync(ctx, "view_lost", 0); err != nil {
					return err
				}
			case epoch != was:
				// A new history began (a loss, a recount, a reader that
				// could not prove it continued the old one) without a
				// message yet: the versions ahead say nothing of ours.
				if err := h.resync(ctx, "epoch", 0); err != nil {
					return err
				}
			case v < last:
				if err := h.resync(ctx, "version_back", 0); err != nil {
					return err
				}
			case ahead > last:
				if err := h.resync(ctx, "lost_message", 0); err != nil {
					return err
				}
			}
			ahead = 0
			if v > last {
				ahead = v
			}
		}
	}
}

func (h *viewHub) onMessage(ctx context.Context, payload string) error {
	var m struct {
		Version int64  `json:"version"`
		Epoch   string `json:"epoch"`
		// A rebuild or backfill swapped the view's counters: there is no
		// delta to pass on, only a new state to read.
		Reset bool `json:"reset"`
	}
	if err := json.Unmarshal([]byte(payload), &m); err != nil || m.Version <= 0 {
		h.log.Warn("message without a version ignored", "err", err)
		return nil
	}
	h.mu.Lock()
	if h.epoch == "" && h.last == 0 {
		// Nothing was ever applied to the view: its first message begins
		// the first epoch, which clients at version 0 are in already.
		h.epoch = m.Epoch
		for c := range h.clients {
			if c.epoch == "" && c.have == 0 {
				c.epoch = m.Epoch
			}
		}
		if h.snap != nil && h.snap.epoch == "" && h.snap.version == 0 {
			// The cached empty snapshot is the epoch's version 0; a copy,
			// as clients' writers may be reading the cached one.
			cp := *h.snap
			cp.epoch = m.Epoch
			h.snap = &cp
		}
	}
	switch last := h.last; {
	case slices.Contains(h.left, m.Epoch):
		h.mu.Unlock()
		return nil // published before the view moved to the epoch it is in
	case m.Epoch != h.epoch:
		was := h.epoch
		h.mu.Unlock()
		why := "epoch"
		if m.Reset {
			why = "reset"
		}
		h.log.Info("view epoch changed", "epoch", m.Epoch, "after", was, "reset", m.Reset)
		return h.resync(ctx, why, m.Version)
	case m.Version <= last:
		h.mu.Unlock()
		return nil // the snapshot holds it already
	case m.Reset:
		h.mu.Unlock()
		h.log.Info("view reset", "version", m.Version, "after", last)
		return h.resync(ctx, "reset", m.Version)
	case m.Version == last+1:
		e := newEvent("delta", h.view.Name, m.Epoch, m.Version, []byte(payload))
		h.keep(e)
		h.last = e.version
		for c := range h.clients {
			switch {
			case c.epoch != e.epoch:
				// Joined with a snapshot of an epoch the hub has not
				// reached yet: the hub's resync brings it along.
			case c.have >= e.version:
			case c.have == e.version-1:
				h.send(c, e)
			default:
				// Cannot happen while the bookkeeping is right; a client
				// with a hole must not go on as if it had none.
				h.drop(c)
			}
		}
		h.mu.Unlock()
		return nil
	default:
		h.mu.Unlock()
		h.log.Info("gap in versions", "version", m.Version, "after", last)
		return h.resync(ctx, "gap", 0)
	}
}

// resync reads a snapshot and sends it to every client that is behind it
// (or to all, when Redis went back to an older version). The ring starts
// again after it, so that no client resumes with deltas across it: after
// a reset, one that resumes from before gets a snapshot.
// why is a metric label: subscribed, gap, lost_message, version_back,
// view_lost or reset. A reset's snapshot must be at least at version
// least; Redis answering with an older one fails the session, which
// subscribes and reads again.
func (h *viewHub) resync(ctx context.Context, why string, least int64) error {
	h.metrics.snapshots.WithLabelValues(h.view.Name, why).Inc()
	e, lost, err := h.read(ctx, nil)
	if err != nil {
		return err
	}
	if e.version < least {
		return fmt.Errorf("snapshot of view %s at version %d after a reset to %d", h.view.Name, e.version, least)
	}
	h.mu.Lock()
	// A lost mark comes without a new version: everyone gets the snapshot
	// that carries it. So does everyone when the epoch changed: versions
	// of the old one say nothing about the new one.
	back := (h.synced && (e.version < h.last || e.epoch != h.epoch)) || (lost != "" && h.lost == "")
	// Clients of a range of their own need a series of that range: one
	// read per range, however many clients share it.
	spans := map[string]*span{}
	for c := range h.clients {
		if c.span != nil && (back || c.have < e.version) {
			spans[c.span.key()] = c.span
		}
	}
	h.mu.Unlock()
	own := make(map[string]*event, len(spans))
	for k, sp := range spans {
		if own[k], _, err = h.read(ctx, sp); err != nil {
			return err
		}
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.lost = lost
	h.log.Info("view snapshot", "why", why, "epoch", e.epoch, "version", e.version, "clients", len(h.clients), "ranges", len(own))
	if h.epoch != e.epoch && h.epoch != "" {
		h.left = append(h.left, h.epoch)
		if len(h.left) > 8 {
			h.left = h.left[1:]
		}
	}
	h.synced, h.last, h.epoch, h.ring, h.snap = true, e.version, e.epoch, h.ring[:0], e
	for c := range h.clients {
		ce := e
		if c.span != nil {
			ce = own[c.span.key()]
		}
		switch {
		case !back && c.epoch == e.epoch && c.have >= e.version:
		case ce == nil:
			// Joined while the ranges were read, behind this snapshot:
			// it reconnects and resumes.
			h.drop(c)
		default:
			// A range read later may be newer than e: the client then
			// skips the deltas up to it, as it has them.
			h.send(c, ce)
		}
	}
	return nil
}

// read reads the view's snapshot: totals, or the series of sp (nil: the
// live default range).
func (h *viewHub) read(ctx context.Context, sp *span) (*event, string, error) {
	var data any
	var version int64
	var lost, epoch string
	var from int64
	if h.view.Bucketed() {
		if sp == nil {
			live := liveSpan(h.view, time.Now())
			sp = &live
		}
		s, err := series(ctx, h.store, h.view, *sp)
		if err != nil {
			return nil, "", err
		}
		data, version, lost, epoch, from = s, s.Version, s.Lost, s.Epoch, sp.from.Unix()
	} else {
		s, err := h.store.Snapshot(ctx, h.view)
		if err != nil {
			return nil, "", err
		}
		data, version, lost, epoch = s, s.Version, s.Lost, s.Epoch
	}
	b, err := json.Marshal(data)
	if err != nil {
		return nil, "", err
	}
	e := newEvent("snapshot", h.view.Name, epoch, version, b)
	e.from = from
	return e, lost, nil
}

// current reports whether the cached snapshot serves a client joining
// now: always for totals; for a bucketed view while its range still
// starts where the live default range does.
func (h *viewHub) current(e *event) bool {
	return !h.view.Bucketed() || e.from == liveSpan(h.view, time.Now()).from.Unix()
}

// keep appends a delta to the ring, trimming it to history in bulk.
func (h *viewHub) keep(e *event) {
	if h.history == 0 {
		return
	}
	h.ring = append(h.ring, e)
	if len(h.ring) > 2*h.history {
		n := copy(h.ring, h.ring[len(h.ring)-h.history:])
		clear(h.ring[n:])
		h.ring = h.ring[:n]
	}
}

// since returns the deltas after version v up to last, if the ring holds
// them all and they fit a client's buffer.
func (h *viewHub) since(v int64) ([]*event, bool) {
	if v == h.last {
		return nil, true
	}
	if v > h.last || len(h.ring) == 0 || h.ring[0].version > v+1 || h.last-v >= int64(h.buffer) {
		return nil, false
	}
	return h.ring[v+1-h.ring[0].version:], true
}

func (h *viewHub) send(c *client, e *event) {
	select {
	case c.sink.ch <- e:
		c.have, c.epoch = e.version, e.epoch
		h.count(e)
	default:
		h.drop(c)
	}
}

func (h *viewHub) count(e *event) {
	if e.kind == "delta" {
		h.deltas.Inc()
	} else {
		h.snaps.Inc()
	}
}

// drop lets a connection go that does not keep up, so it never slows the
// others; the browser reconnects and resumes.
func (h *viewHub) drop(c *client) {
	delete(h.clients, c)
	c.sink.drop()
	h.drops.Inc()
}

// errBusy means the view changed faster than snapshots could be read for a
// joining client.
var errBusy = errors.New("the view changes too fast to catch up; try again")

func (h *viewHub) join(ctx context.Context, resume position, sp *span, s *sink) (*client, error) {
	c := &client{sink: s, hub: h, span: sp}
	// The caller sizes the sink for every view it joins; since bounds each
	// view's first events by the buffer. Other views' deltas may already
	// fill it, and then the connection is dropped like any slow one.
	register := func(evs []*event, have int64, epoch string) {
		for _, e := range evs {
			select {
			case s.ch <- e:
				h.count(e)
			default:
				s.drop()
				h.drops.Inc()
				return
			}
		}
		c.have, c.epoch = have, epoch
		h.clients[c] = struct{}{}
	}
	h.mu.Lock()
	if resume.version >= 0 && h.synced && resume.epoch == h.epoch {
		if evs, ok := h.since(resume.version); ok {
			register(evs, h.last, h.epoch)
			h.mu.Unlock()
			return c, nil
		}
	}
	h.mu.Unlock()
	var own *event // a range of the client's own is read for it alone
	for range 5 {
		h.mu.Lock()
		snap := h.snap
		if sp != nil {
			snap = own
		} else if snap != nil && !h.current(snap) {
			snap = nil // a new bucket began: the live range moved on
		}
		if snap != nil && snap.epoch != h.epoch && (snap.epoch == "" || slices.Contains(h.left, snap.epoch)) {
			snap = nil // of an epoch the view has left
		}
		if snap != nil {
			if snap.epoch != h.epoch || snap.version >= h.last {
				register([]*event{snap}, snap.version, snap.epoch)
				h.mu.Unlock()
				return c, nil
			}
			if evs, ok := h.since(snap.version); ok && len(evs) < h.buffer {
				register(append([]*event{snap}, evs...), h.last, h.epoch)
				h.mu.Unlock()
				return c, nil
			}
		}
		h.mu.Unlock()

		if sp != nil {
			h.metrics.snapshots.WithLabelValues(h.view.Name, "join").Inc()
			e, _, err := h.read(ctx, sp)
			if err != nil {
				return nil, err
			}
			own = e
			continue
		}
		h.fetchMu.Lock()
		h.mu.Lock()
		fresh := h.snap != snap && h.snap != nil && h.current(h.snap) // another client read one meanwhile: try it first
		h.mu.Unlock()
		if !fresh {
			h.metrics.snapshots.WithLabelValues(h.view.Name, "join").Inc()
			e, _, err := h.read(ctx, nil)
			if err != nil {
				h.fetchMu.Unlock()
				return nil, err
			}
			h.mu.Lock()
			if h.snap == nil || e.epoch != h.snap.epoch || e.version >= h.snap.version || !h.current(h.snap) {
				h.snap = e
			}
			h.mu.Unlock()
		}
		h.fetchMu.Unlock()
	}
	return nil, errBusy
}
