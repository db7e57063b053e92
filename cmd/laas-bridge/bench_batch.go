package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net/http"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/laas-bridge/laas-bridge/batch"
	"github.com/laas-bridge/laas-bridge/batch/batchcli"
	"github.com/laas-bridge/laas-bridge/bridge"
	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge/internal/bench"
)

// batchMix runs the batch mode: on its own mock and `serve`, interactive
// calls at a fixed rate alone, then the same load beside a batch submitted
// through the Batch API; it prints the latency the batch added and how the
// batch progressed.
func (h *benchHarness) batchMix(ctx context.Context, stdout io.Writer) error {
	c := h.cfg
	mockURL, err := h.startMock(ctx, "batch-mock-laas", c.batchLatency)
	if err != nil {
		return err
	}
	env := h.laasEnv(mockURL, "BRIDGE_WORKER_CONCURRENCY="+strconv.Itoa(c.batchConcurrency), "BRIDGE_LAAS_RPM="+strconv.Itoa(c.batchRPM))
	_, addr, err := h.start(ctx, "batch-serve", env, benchGatewayReady, "serve", "--listen", "127.0.0.1:0", "--nats-listen", "",
		"--data-dir", filepath.Join(h.dir, "batch-serve-data"))
	if err != nil {
		return err
	}
	base := "http://" + addr
	t := h.chatTarget(bench.TargetBridge, base)
	t.MsHeader = bridge.HeaderQueueMs
	client := bench.NewClient(1024)
	if err := bench.Do(ctx, client, t); err != nil {
		return fmt.Errorf("bench: the batch mode's bridge does not answer: %w", err)
	}
	bc, err := batchcli.NewHTTPClient(base, "")
	if err != nil {
		return err
	}

	fmt.Fprintf(h.stderr, "bench: interactive alone at %d/s for %s (mock latency %s, worker concurrency %d)\n",
		c.batchRate, c.duration, c.batchLatency, c.batchConcurrency)
	alone := bench.FixedRate(ctx, client, t, c.batchRate, c.duration, c.warmup)

	input, err := h.batchInput(c.batchLines)
	if err != nil {
		return err
	}
	submitted := time.Now()
	b, err := bc.Submit(ctx, "bench.jsonl", bytes.NewReader(input), map[string]string{"source": "laas-bridge bench"})
	if err != nil {
		return err
	}
	fmt.Fprintf(h.stderr, "bench: batch %s of %d lines submitted; waiting for its first answered line\n", b.ID, c.batchLines)
	// The window opens once lines are being answered, so every slot the
	// batch can take is taken.
	if b, err = pollBatch(ctx, bc, b.ID, func(b batchcli.Batch) bool { return b.Final() || b.Done() > 0 }); err != nil {
		return err
	}
	if b.Final() {
		return fmt.Errorf("bench: batch %s ended (%s) before the interactive load started; give more --batch-lines", b.ID, b.Status)
	}
	fmt.Fprintf(h.stderr, "bench: interactive at %d/s for %s beside batch %s (%d of %d lines done)\n",
		c.batchRate, c.duration, b.ID, b.Counts.Completed+b.Counts.Failed, c.batchLines)
	windowStart := time.Now()
	sctx, stopSampling := context.WithCancel(ctx)
	slots := make(chan gaugeStats, 1)
	go func() { slots <- sampleGauge(sctx, base+"/metrics", benchInFlight, 100*time.Millisecond) }()
	during := bench.FixedRate(ctx, client, t, c.batchRate, c.duration, 0)
	stopSampling()
	busy := <-slots
	after, err := bc.Get(ctx, b.ID)
	if err != nil {
		return err
	}
	prog := bench.BatchProgress{
		Lines:      int64(c.batchLines),
		WindowDone: after.Counts.Completed + after.Counts.Failed - b.Counts.Completed - b.Counts.Failed,
		Window:     time.Since(windowStart),
		Throughout: !after.Final(),
		Slots:      c.batchConcurrency,
		SlotsMean:  busy.mean(),
		SlotsMax:   busy.max,
	}
	fmt.Fprintf(h.stderr, "bench: waiting for batch %s to end\n", b.ID)
	if b, err = pollBatch(ctx, bc, b.ID, batchcli.Batch.Final); err != nil {
		return err
	}
	prog.Elapsed = time.Since(submitted)
	prog.Status, prog.Completed, prog.Failed = b.Status, b.Counts.Completed, b.Counts.Failed
	if b.OutputFileID != "" {
		if prog.OutputLines, err = countLines(ctx, bc, b.OutputFileID); err != nil {
			return err
		}
	}

	fmt.Fprintf(stdout, "\nbatch mode: interactive %d/s for %s, alone then beside a batch of %d lines; mock latency %s, worker concurrency %d, LaaS rpm %s, %d CPUs, %s\n",
		c.batchRate, c.duration, c.batchLines, c.batchLatency, c.batchConcurrency, rpmText(c.batchRPM), runtime.NumCPU(), runtime.Version())
	if err := bench.WriteMixTable(stdout, alone, during, prog); err != nil {
		return err
	}
	for _, r := range []struct {
		name string
		res  *bench.Result
	}{{"alone", alone}, {"during batch", during}} {
		if r.res.FirstError != "" {
			fmt.Fprintf(stdout, "interactive %s: first error: %s\n", r.name, r.res.FirstError)
		}
	}
	if len(b.Errors) > 0 {
		fmt.Fprintf(stdout, "batch errors: %s\n", b.ErrorsText())
	}
	return nil
}

func rpmText(rpm int) string {
	if rpm == 0 {
		return "unlimited"
	}
	return strconv.Itoa(rpm)
}

// batchInput is a Batch API input file of n lines, each the chat request
// the interactive calls send.
func (h *benchHarness) batchInput(n int) ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for i := range n {
		line := struct {
			CustomID string          `json:"custom_id"`
			Method   string          `json:"method"`
			URL      string          `json:"url"`
			Body     json.RawMessage `json:"body"`
		}{fmt.Sprintf("bench-%d", i), "POST", "/v1/chat/completions", h.chatBody()}
		if err := enc.Encode(line); err != nil {
			return nil, err
		}
	}
	return buf.Bytes(), nil
}

// pollBatch polls batch id every 100ms until done says so.
func pollBatch(ctx context.Context, c batchcli.Client, id string, done func(batchcli.Batch) bool) (batchcli.Batch, error) {
	for {
		b, err := c.Get(ctx, id)
		if err != nil || done(b) {
			return b, err
		}
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
			return b, ctx.Err()
		}
	}
}

// countLines counts the non-blank lines of a file of the Batch API, as the
// Batch API counts an input file's (batch.LineCounter).
func countLines(ctx context.Context, c batchcli.Client, fileID string) (int64, error) {
	r, err := c.Content(ctx, fileID)
	if err != nil {
		return 0, err
	}
	defer r.Close()
	lc := batch.NewLineCounter(r, math.MaxInt64)
	if _, err := io.Copy(io.Discard, lc); err != nil {
		return 0, err
	}
	return int64(lc.Lines()), nil
}

// benchInFlight is the worker's gauge of jobs in flight: its busy slots.
const benchInFlight = "laas_bridge_worker_in_flight"

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
