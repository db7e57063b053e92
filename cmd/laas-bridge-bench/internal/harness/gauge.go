package harness

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
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
		if v, err := readGauge(ctx, url, name); err == nil {
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

func readGauge(ctx context.Context, url, name string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, err
	}
	mf, ok := mfs[name]
	if !ok || len(mf.GetMetric()) != 1 {
		return 0, fmt.Errorf("%s: no single series %s", url, name)
	}
	return mf.GetMetric()[0].GetGauge().GetValue(), nil
}
