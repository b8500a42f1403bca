// Package gateway serves views to browsers: a JSON API, Server-Sent Events
// with a snapshot followed by one delta per version, bearer-token access
// per view, and the dashboard page. It reads Redis only, through the data
// contract of package publish, never DynamoDB.
package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/aggregate"
	"github.com/streamtally/streamtally/config"
	"github.com/streamtally/streamtally/publish"
)

// Options configures a Server.
type Options struct {
	Serve  config.Serve
	Client redis.UniversalClient
	Prefix string
	Views  []config.View
	Log    *slog.Logger
	// WriteTimeout bounds each write to a client; a client that accepts
	// nothing for this long is let go. Zero means 10 s.
	WriteTimeout time.Duration
}

// Server is the gateway.
type Server struct {
	opts    Options
	hub     *Hub
	auth    *Auth
	store   *publish.Redis
	views   map[string]*aggregate.View
	infos   []viewInfo
	handler http.Handler
	metrics *metrics
}

type viewInfo struct {
	Name     string        `json:"name"`
	GroupBy  []string      `json:"group_by"`
	Measures []measureInfo `json:"measures"`
	// Bucket is set for a bucketed view: GET /v1/views/{view} and its
	// stream carry a series of buckets instead of totals.
	Bucket *bucketInfo `json:"bucket,omitempty"`
}

type bucketInfo struct {
	Size      string `json:"size"`      // as configured, e.g. 1h
	SizeS     int64  `json:"size_s"`    // in seconds
	Time      string `json:"time"`      // the time attribute, or "stream"
	Retention string `json:"retention"` // as configured, e.g. 30d
}

type measureInfo struct {
	Name string `json:"name"`
	Func string `json:"func"`           // count or sum
	Attr string `json:"attr,omitempty"` // for sum
}

// New builds the gateway; Serve runs it.
func New(o Options) *Server {
	if o.WriteTimeout == 0 {
		o.WriteTimeout = 10 * time.Second
	}
	specs := make([]aggregate.Spec, len(o.Views))
	for i := range o.Views {
		specs[i] = o.Views[i].Spec
	}
	views := aggregate.NewViews(specs)
	m := newMetrics()
	s := &Server{
		metrics: m,
		opts:    o,
		auth:    NewAuth(o.Serve),
		store:   publish.NewRedis(o.Client, o.Prefix, nil),
		views:   map[string]*aggregate.View{},
		hub: newHub(hubOptions{
			Client: o.Client, Prefix: o.Prefix, Views: views,
			Buffer: o.Serve.ClientBuffer, History: o.Serve.History, Check: o.Serve.Heartbeat, Log: o.Log,
			metrics: m,
		}),
	}
	m.watch(s.hub)
	for i, v := range views {
		s.views[v.Name] = v
		info := viewInfo{Name: v.Name, GroupBy: o.Views[i].GroupBy}
		for _, m := range o.Views[i].Spec.Measures {
			info.Measures = append(info.Measures, measureInfo{Name: m.Name, Func: m.Func, Attr: m.Attr})
		}
		if b := o.Views[i].Bucket; b != nil && v.Bucketed() {
			info.Bucket = &bucketInfo{Size: b.Size, SizeS: int64(v.BucketSize() / time.Second), Time: b.Time, Retention: b.Retention}
		}
		s.infos = append(s.infos, info)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/views", s.listViews)
	mux.HandleFunc("GET /v1/views/{view}", s.snapshot)
	mux.HandleFunc("GET /v1/views/{view}/events", s.events)
	mux.HandleFunc("GET /v1/events", s.eventsMux)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok\n")) })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if !s.hub.Ready() {
			http.Error(w, "subscribing to Redis", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	static := http.FileServerFS(webRoot())
	mux.HandleFunc("GET /", func(w http.ResponseWriter, r *http.Request) {
		// The page loads nothing from elsewhere, so it may load nothing
		// from elsewhere.
		w.Header().Set("Content-Security-Policy", "default-src 'self'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		static.ServeHTTP(w, r)
	})
	s.handler = cors(o.Serve.CORSOrigins, mux)
	return s
}

// Handler is the gateway's HTTP handler; the hub must be running (Serve
// runs it) for event streams to receive deltas.
func (s *Server) Handler() http.Handler { return s.handler }

// Hub is the gateway's hub.
func (s *Server) Hub() *Hub { return s.hub }

// Serve runs the hub and answers on ln until ctx ends. Event streams end
// with ctx; browsers reconnect to another gateway.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	hubDone := make(chan struct{})
	go func() {
		defer close(hubDone)
		s.hub.Run(ctx)
	}()
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		// Request contexts end with ctx, which ends every event stream,
		// so that Shutdown does not wait for streams that never go idle.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ErrorLog:    slog.NewLogLogger(s.opts.Log.Handler(), slog.LevelDebug),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	var err error
	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	cancel()
	shutCtx, stop := context.WithTimeout(context.Background(), 5*time.Second)
	defer stop()
	if e := srv.Shutdown(shutCtx); e != nil && err == nil {
		err = e
	}
	<-hubDone
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// authorize answers 401 or 403 itself and returns nil when r may not read
// view ("" for any view). The token never reaches a log line.
func (s *Server) authorize(w http.ResponseWriter, r *http.Request, view string) *Grant {
	g, err := s.auth.Check(r)
	if err != nil {
		w.Header().Set("WWW-Authenticate", `Bearer realm="streamtally"`)
		s.fail(w, r, http.StatusUnauthorized, err.Error(), "")
		return nil
	}
	if view != "" && !g.May(view) {
		s.fail(w, r, http.StatusForbidden, "this token may not read view "+strconv.Quote(view), g.Who)
		return nil
	}
	return g
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, code int, msg, who string) {
	s.opts.Log.Info("request refused", "path", r.URL.Path, "status", code, "why", msg, "who", who, "remote", r.RemoteAddr)
	s.metrics.refused.WithLabelValues(strconv.Itoa(code)).Inc()
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func (s *Server) listViews(w http.ResponseWriter, r *http.Request) {
	g := s.authorize(w, r, "")
	if g == nil {
		return
	}
	out := []viewInfo{}
	for _, v := range s.infos {
		if g.May(v.Name) {
			out = append(out, v)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"views": out})
}

// view checks access before existence, so that a token learns nothing
// about views it may not read.
func (s *Server) view(w http.ResponseWriter, r *http.Request) *aggregate.View {
	name := r.PathValue("view")
	if s.authorize(w, r, name) == nil {
		return nil
	}
	v := s.views[name]
	if v == nil {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "no view " + strconv.Quote(name)})
	}
	return v
}

func (s *Server) snapshot(w http.ResponseWriter, r *http.Request) {
	v := s.view(w, r)
	if v == nil {
		return
	}
	sp, _, err := parseSpan(v, r.URL.Query(), time.Now(), false)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	var snap any
	if v.Bucketed() {
		snap, err = series(r.Context(), s.store, v, sp)
	} else {
		snap, err = s.store.Snapshot(r.Context(), v)
	}
	if err != nil {
		s.opts.Log.Warn("snapshot failed", "view", v.Name, "err", err)
		writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "Redis is not answering"})
		return
	}
	writeJSON(w, http.StatusOK, snap)
}

// events is one view's stream; each event's id is the view's version
// with its epoch.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	v := s.view(w, r)
	if v == nil {
		return
	}
	resume := map[string]position{}
	if id := lastEventID(r); id != "" {
		n, epoch, ok := parseEventID(id)
		if !ok {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "Last-Event-ID is not a version"})
			return
		}
		resume[v.Name] = position{n, epoch}
	}
	spans, ok := s.spans(w, r, []string{v.Name})
	if !ok {
		return
	}
	s.stream(w, r, []string{v.Name}, resume, spans, false)
}

// eventsMux streams several views on one connection (?view=a&view=b; all
// the token may read without view), because a browser opens at most six
// HTTP/1.1 connections to a host and a dashboard may show more views.
// Each event's id lists every view's version and epoch,
// "a:12@<epoch>,b:7@<epoch>", so one Last-Event-ID resumes them all.
func (s *Server) eventsMux(w http.ResponseWriter, r *http.Request) {
	g := s.authorize(w, r, "")
	if g == nil {
		return
	}
	names := r.URL.Query()["view"]
	if len(names) == 0 {
		for _, v := range s.infos {
			if g.May(v.Name) {
				names = append(names, v.Name)
			}
		}
		if len(names) == 0 {
			s.fail(w, r, http.StatusForbidden, "this token may read no view", g.Who)
			return
		}
	}
	seen := map[string]bool{}
	var list []string
	for _, n := range names {
		switch {
		case !g.May(n):
			s.fail(w, r, http.StatusForbidden, "this token may not read view "+strconv.Quote(n), g.Who)
			return
		case s.views[n] == nil:
			writeJSON(w, http.StatusNotFound, map[string]string{"error": "no view " + strconv.Quote(n)})
			return
		case !seen[n]:
			seen[n] = true
			list = append(list, n)
		}
	}
	resume := map[string]position{}
	if id := lastEventID(r); id != "" {
		for _, part := range strings.Split(id, ",") {
			name, ver, ok := strings.Cut(part, ":")
			n, epoch, valid := parseEventID(ver)
			if !ok || !valid {
				writeJSON(w, http.StatusBadRequest, map[string]string{"error": "Last-Event-ID is not a list of view:version"})
				return
			}
			if seen[name] {
				resume[name] = position{n, epoch}
			}
		}
	}
	spans, ok := s.spans(w, r, list)
	if !ok {
		return
	}
	s.stream(w, r, list, resume, spans, true)
}

// spans reads ?from= and ?to= for the bucketed views among names (on a
// multiplexed stream they apply to every bucketed view); it answers 400
// itself. A view on the live default range has no entry: its clients
// share the hub's snapshot.
func (s *Server) spans(w http.ResponseWriter, r *http.Request, names []string) (map[string]*span, bool) {
	out := map[string]*span{}
	q := r.URL.Query()
	now := time.Now()
	for _, name := range names {
		v := s.views[name]
		if !v.Bucketed() && len(names) > 1 {
			continue
		}
		sp, live, err := parseSpan(v, q, now, true)
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return nil, false
		}
		if v.Bucketed() && !live {
			out[name] = &sp
		}
	}
	return out, true
}

func lastEventID(r *http.Request) string {
	id := r.Header.Get("Last-Event-ID")
	if id == "" {
		// For clients that cannot set headers on a first connection.
		id = r.URL.Query().Get("last_event_id")
	}
	return strings.TrimSpace(id)
}

// stream joins the views' hubs on one sink and writes its events until the
// client leaves, the gateway stops, or a hub drops the connection as slow.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, views []string, resume map[string]position, spans map[string]*span, mux bool) {
	rc := http.NewResponseController(w)
	// A deadline in the past makes a blocked write return at once.
	sk := newSink(s.opts.Serve.ClientBuffer*len(views), func() { _ = rc.SetWriteDeadline(time.Now()) })
	have := map[string]string{}
	for _, name := range views {
		from := position{version: -1}
		if p, ok := resume[name]; ok {
			from, have[name] = p, eventID(p.version, p.epoch)
		}
		c, err := s.hub.Join(r.Context(), name, from, spans[name], sk)
		if err != nil {
			if r.Context().Err() == nil {
				s.opts.Log.Warn("event stream refused", "view", name, "err", err)
				writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "Redis is not answering"})
			}
			return
		}
		defer s.hub.Leave(c)
	}
	sse, err := startSSE(w, rc, s.opts.WriteTimeout)
	if err != nil {
		return
	}
	var idb strings.Builder
	id := func(e *event) string {
		if !mux {
			return eventID(e.version, e.epoch)
		}
		have[e.view] = eventID(e.version, e.epoch)
		idb.Reset()
		for _, name := range views {
			if v, ok := have[name]; ok {
				if idb.Len() > 0 {
					idb.WriteByte(',')
				}
				idb.WriteString(name)
				idb.WriteByte(':')
				idb.WriteString(v)
			}
		}
		return idb.String()
	}
	beat := time.NewTicker(s.opts.Serve.Heartbeat)
	defer beat.Stop()
	for {
		select {
		case <-r.Context().Done():
			return
		case <-sk.done:
			s.opts.Log.Debug("slow client dropped", "views", views, "remote", r.RemoteAddr)
			return
		case <-beat.C:
			if sse.heartbeat() != nil {
				return
			}
		case e := <-sk.ch:
			// A dropped connection's queue may still hold events; it gets
			// none of them, and resumes where its writes stopped.
			if sk.dropped() || sse.write(id(e), e) != nil {
				return
			}
			// Write what else is queued before one flush.
			for more := true; more; {
				select {
				case e := <-sk.ch:
					if sk.dropped() || sse.write(id(e), e) != nil {
						return
					}
				default:
					more = false
				}
			}
			if sse.flush() != nil {
				return
			}
		}
	}
}
