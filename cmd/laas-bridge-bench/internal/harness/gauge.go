package harness

import (
	"context"
	"time"

	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge-bench/internal/soak"
)

// workerInFlight is the worker's gauge of jobs in flight: its busy slots.
const workerInFlight = "laas_bridge_worker_in_flight"

// gaugeStats summarises samples of a gauge.
type gaugeStats struct {
	sum, max float64
	n        int
}

func (g gaugeStats) mean() float64 {
	if g.n == 0 {
		return 0
	}
	return g.sum / float64(g.n)
}

// sampleGauge reads the gauge name from a Prometheus text endpoint every
// interval until ctx ends; failed reads are not counted.
func sampleGauge(ctx context.Context, url, name string, interval time.Duration) gaugeStats {
	var g gaugeStats
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if v, err := soak.ReadGauge(ctx, url, name); err == nil {
			g.sum += v
			g.max = max(g.max, v)
			g.n++
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return g
		}
	}
}
