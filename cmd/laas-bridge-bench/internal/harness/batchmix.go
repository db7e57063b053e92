package harness

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/laas-bridge/laas-bridge/batch"
	"github.com/laas-bridge/laas-bridge/batch/batchcli"
	"github.com/laas-bridge/laas-bridge/bridge"
	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge-bench/internal/load"
)

// batchMix runs the batch mode: on its own mock and `serve`, interactive
// calls at a fixed rate alone, then the same load beside a batch submitted
// through the Batch API; it prints the latency the batch added and how the
// batch progressed.
func (h *harness) batchMix(ctx context.Context, stdout io.Writer) error {
	c := h.cfg
	base, err := h.startBatchBridge(ctx)
	if err != nil {
		return err
	}
	t := h.chatTarget(load.TargetBridge, base)
	t.MsHeader = bridge.HeaderQueueMs
	client := load.NewClient(1024)
	if err := load.Do(ctx, client, t); err != nil {
		return fmt.Errorf("bench: the batch mode's bridge does not answer: %w", err)
	}
	bc, err := batchcli.NewHTTPClient(base, "")
	if err != nil {
		return err
	}

	fmt.Fprintf(h.stderr, "bench: interactive alone at %d/s for %s (mock latency %s, worker concurrency %d)\n",
		c.BatchRate, c.Duration, c.BatchLatency, c.BatchConcurrency)
	alone := load.FixedRate(ctx, client, t, c.BatchRate, c.Duration, c.Warmup)

	input, err := h.batchInput(c.BatchLines)
	if err != nil {
		return err
	}
	submitted := time.Now()
	b, err := h.submitBatch(ctx, bc, input)
	if err != nil {
		return err
	}
	fmt.Fprintf(h.stderr, "bench: interactive at %d/s for %s beside batch %s (%d of %d lines done)\n",
		c.BatchRate, c.Duration, b.ID, b.Done(), c.BatchLines)
	windowStart := time.Now()
	sctx, stopSampling := context.WithCancel(ctx)
	slots := make(chan gaugeStats, 1)
	go func() { slots <- sampleGauge(sctx, base+"/metrics", workerInFlight, 100*time.Millisecond) }()
	during := load.FixedRate(ctx, client, t, c.BatchRate, c.Duration, 0)
	stopSampling()
	busy := <-slots
	after, err := bc.Get(ctx, b.ID)
	if err != nil {
		return err
	}
	prog := load.BatchProgress{
		Lines:      int64(c.BatchLines),
		WindowDone: after.Done() - b.Done(),
		Window:     time.Since(windowStart),
		Throughout: !after.Final(),
		Slots:      c.BatchConcurrency,
		SlotsMean:  busy.mean(),
		SlotsMax:   busy.max,
	}
	if b, err = h.awaitBatch(ctx, bc, b.ID, submitted, &prog); err != nil {
		return err
	}
	return h.writeBatchMix(stdout, alone, during, prog, b)
}

// startBatchBridge starts the batch mode's mock and `serve` and returns the
// bridge's base URL.
func (h *harness) startBatchBridge(ctx context.Context) (string, error) {
	c := h.cfg
	mockURL, err := h.startMock(ctx, "batch-mock-laas", c.BatchLatency)
	if err != nil {
		return "", err
	}
	env := h.laasEnv(mockURL, "BRIDGE_WORKER_CONCURRENCY="+strconv.Itoa(c.BatchConcurrency), "BRIDGE_LAAS_RPM="+strconv.Itoa(c.BatchRPM))
	_, addr, err := h.startBridge(ctx, "batch-serve", env, gatewayReady, "serve", "--listen", "127.0.0.1:0", "--nats-listen", "",
		"--data-dir", filepath.Join(h.dir, "batch-serve-data"))
	if err != nil {
		return "", err
	}
	return "http://" + addr, nil
}

// submitBatch submits the batch and waits until its lines are being
// answered, so every slot the batch can take is taken when the window
// opens.
func (h *harness) submitBatch(ctx context.Context, bc batchcli.Client, input []byte) (batchcli.Batch, error) {
	b, err := bc.Submit(ctx, "bench.jsonl", bytes.NewReader(input), map[string]string{"source": "laas-bridge bench"})
	if err != nil {
		return b, err
	}
	fmt.Fprintf(h.stderr, "bench: batch %s of %d lines submitted; waiting for its first answered line\n", b.ID, h.cfg.BatchLines)
	if b, err = pollBatch(ctx, bc, b.ID, func(b batchcli.Batch) bool { return b.Final() || b.Done() > 0 }); err != nil {
		return b, err
	}
	if b.Final() {
		return b, fmt.Errorf("bench: batch %s ended (%s) before the interactive load started; give more --batch-lines", b.ID, b.Status)
	}
	return b, nil
}

// awaitBatch waits for the batch's end and fills in prog's end fields.
func (h *harness) awaitBatch(ctx context.Context, bc batchcli.Client, id string, submitted time.Time, prog *load.BatchProgress) (batchcli.Batch, error) {
	fmt.Fprintf(h.stderr, "bench: waiting for batch %s to end\n", id)
	b, err := pollBatch(ctx, bc, id, batchcli.Batch.Final)
	if err != nil {
		return b, err
	}
	prog.Elapsed = time.Since(submitted)
	prog.Status, prog.Completed, prog.Failed = b.Status, b.Counts.Completed, b.Counts.Failed
	if b.OutputFileID != "" {
		if prog.OutputLines, err = countLines(ctx, bc, b.OutputFileID); err != nil {
			return b, err
		}
	}
	return b, nil
}

// writeBatchMix prints the batch mode's table and its errors.
func (h *harness) writeBatchMix(stdout io.Writer, alone, during *load.Result, prog load.BatchProgress, b batchcli.Batch) error {
	c := h.cfg
	fmt.Fprintf(stdout, "\nbatch mode: interactive %d/s for %s, alone then beside a batch of %d lines; mock latency %s, worker concurrency %d, LaaS rpm %s, %d CPUs, %s\n",
		c.BatchRate, c.Duration, c.BatchLines, c.BatchLatency, c.BatchConcurrency, rpmText(c.BatchRPM), runtime.NumCPU(), runtime.Version())
	if err := load.WriteMixTable(stdout, alone, during, prog); err != nil {
		return err
	}
	for _, r := range []struct {
		name string
		res  *load.Result
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
func (h *harness) batchInput(n int) ([]byte, error) {
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
