package harness

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"time"

	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge-bench/internal/load"
	"github.com/laas-bridge/laas-bridge/queue"
)

// burst runs the burst mode: its own mock, NATS server, gateway and worker.
func (h *harness) burst(ctx context.Context, stdout io.Writer) error {
	c := h.cfg
	mockURL, err := h.startMock(ctx, "burst-mock-laas", c.CallersLatency)
	if err != nil {
		return err
	}
	srv, err := queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: filepath.Join(h.dir, "burst-nats"), Listen: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	env := h.laasEnv(mockURL, "NATS_URL="+srv.ClientURL(), "BRIDGE_LAAS_MAX_CONCURRENCY="+strconv.Itoa(c.CallersConcurrency),
		"BRIDGE_QUEUE_MAX_MSGS="+strconv.Itoa(max(100_000, 2*c.Callers)))
	gw, addr, err := h.startBridge(ctx, "burst-gateway", env, gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	if err != nil {
		return err
	}
	wk, _, err := h.startBridge(ctx, "burst-worker", env, workerReady, "worker", "--concurrency", strconv.Itoa(c.CallersConcurrency))
	if err != nil {
		return err
	}
	t := h.chatTarget(load.TargetBridge, "http://"+addr)
	client := load.NewClient(c.Callers)
	if err := load.Do(ctx, client, t); err != nil {
		return fmt.Errorf("bench: the burst gateway does not answer: %w", err)
	}
	var peakSum int64
	sample := func() {
		g, err1 := load.ReadMemory(gw.cmd.Process.Pid)
		w, err2 := load.ReadMemory(wk.cmd.Process.Pid)
		if err1 == nil && err2 == nil {
			peakSum = max(peakSum, g.RSS+w.RSS)
		}
	}
	fmt.Fprintf(h.stderr, "bench: %d callers at once, mock latency %s, worker concurrency %d\n", c.Callers, c.CallersLatency, c.CallersConcurrency)
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	r := load.Burst(bctx, client, t, c.Callers, sample)
	sample()
	g, err := load.ReadMemory(gw.cmd.Process.Pid)
	if err != nil {
		return err
	}
	w, err := load.ReadMemory(wk.cmd.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nburst: %d callers at once, mock latency %s, worker concurrency %d\n", c.Callers, c.CallersLatency, c.CallersConcurrency)
	fmt.Fprintf(stdout, "  answered %d, failed %d, all answered in %s (p50 %s, p99 %s)\n", r.Requests-r.Errors, r.Errors,
		r.Elapsed.Round(time.Millisecond), r.Quantile(50).Round(time.Millisecond), r.Quantile(99).Round(time.Millisecond))
	fmt.Fprintf(stdout, "  peak resident memory (VmHWM): gateway %s + worker %s = %s (target <= 512 MiB, issue 14); highest sampled sum of VmRSS %s\n",
		load.MiB(g.Peak), load.MiB(w.Peak), load.MiB(g.Peak+w.Peak), load.MiB(peakSum))
	if r.FirstError != "" {
		fmt.Fprintf(stdout, "  first error: %s\n", r.FirstError)
	}
	return nil
}
