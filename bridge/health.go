package bridge

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Health is the body of the health routes.
type Health struct {
	Status string `json:"status"` // "ok", "alive" or "unavailable"
	// NATS is the connection state ("CONNECTED", "RECONNECTING", ...).
	NATS     string        `json:"nats,omitempty"`
	Stream   string        `json:"stream,omitempty"`
	Consumer *ConsumerInfo `json:"consumer,omitempty"`
	// WaitingCallers is how many HTTP callers this gateway holds.
	WaitingCallers *int   `json:"waiting_callers,omitempty"`
	Error          string `json:"error,omitempty"`
}

// ConsumerInfo is the queue at a glance.
type ConsumerInfo struct {
	Name string `json:"name"`
	// Pending jobs no worker has taken yet.
	Pending uint64 `json:"pending"`
	// InFlight jobs taken and not yet acknowledged.
	InFlight int `json:"in_flight"`
	// WaitingPulls is the number of idle worker pull requests: zero with
	// pending work means no worker is pulling.
	WaitingPulls int `json:"waiting_pulls"`
	// Redelivered jobs currently being retried.
	Redelivered int `json:"redelivered"`
}

// liveness answers 200 while the process runs.
func (g *Gateway) liveness(c echo.Context) error {
	return c.JSON(http.StatusOK, Health{Status: "alive"})
}

// readiness answers 200 when NATS is connected and the stream answers, 503
// otherwise and while shutting down.
func (g *Gateway) readiness(c echo.Context) error {
	h, status := g.check(c.Request().Context(), false)
	return c.JSON(status, h)
}

// health is readiness with the queue's numbers, for operators.
func (g *Gateway) health(c echo.Context) error {
	h, status := g.check(c.Request().Context(), true)
	return c.JSON(status, h)
}

func (g *Gateway) check(ctx context.Context, detail bool) (Health, int) {
	h := Health{Status: "ok", NATS: g.nc.Status().String()}
	if detail {
		n := g.corr.pending()
		h.WaitingCallers = &n
	}
	if g.draining.Load() {
		h.Status, h.Error = "unavailable", "shutting down"
		return h, http.StatusServiceUnavailable
	}
	if g.nc.Status() != nats.CONNECTED {
		h.Status, h.Error = "unavailable", "not connected to NATS"
		return h, http.StatusServiceUnavailable
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if _, err := g.js.Stream(ctx, schema.StreamRequests); err != nil {
		h.Status, h.Error = "unavailable", "request stream: "+err.Error()
		return h, http.StatusServiceUnavailable
	}
	h.Stream = schema.StreamRequests
	if detail {
		if ci, err := g.js.Consumer(ctx, schema.StreamRequests, schema.ConsumerWorkers); err == nil {
			info := ci.CachedInfo()
			h.Consumer = &ConsumerInfo{
				Name: info.Name, Pending: info.NumPending, InFlight: info.NumAckPending,
				WaitingPulls: info.NumWaiting, Redelivered: info.NumRedelivered,
			}
		} else {
			h.Error = "worker consumer: " + err.Error()
		}
	}
	return h, http.StatusOK
}
