package gateway

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the gateway's Prometheus series. They name views, never
// tokens or tenants.
type metrics struct {
	reg       *prometheus.Registry
	events    *prometheus.CounterVec // view, kind: events queued for clients
	dropped   *prometheus.CounterVec // view: connections dropped as too slow
	snapshots *prometheus.CounterVec // view, reason: snapshots read from Redis
	refused   *prometheus.CounterVec // code: requests answered 401 or 403
}

func newMetrics() *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamtally_gateway_events_total",
			Help: "Events queued for clients, by view and kind (snapshot or delta).",
		}, []string{"view", "kind"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamtally_gateway_dropped_total",
			Help: "Client connections dropped because their queue was full.",
		}, []string{"view"}),
		snapshots: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamtally_gateway_snapshots_total",
			Help: "Snapshots read from Redis, by view and reason (subscribed, gap, lost_message, version_back, view_lost, reset, join).",
		}, []string{"view", "reason"}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "streamtally_gateway_refused_total",
			Help: "Requests refused for want of a valid token (401) or of a grant for the view (403).",
		}, []string{"code"}),
	}
	m.reg.MustRegister(m.events, m.dropped, m.snapshots, m.refused,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// watch adds a gauge of each view's connected clients.
func (m *metrics) watch(h *Hub) {
	for _, vh := range h.order {
		m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "streamtally_gateway_clients",
			Help:        "Clients connected to a view's event stream.",
			ConstLabels: prometheus.Labels{"view": vh.view.Name},
		}, func() float64 {
			vh.mu.Lock()
			defer vh.mu.Unlock()
			return float64(len(vh.clients))
		}))
	}
}

// MetricsHandler serves the gateway's metrics in Prometheus text format.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.metrics.reg, promhttp.HandlerOpts{})
}
