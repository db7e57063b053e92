package harness

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge-bench/internal/load"
)

// latencyTargets are the fixed and closed modes' targets: the mock
// called directly, the baseline and the bridge.
type latencyTargets struct {
	targets   []load.Target
	bridge    *child     // the started bridge; nil with --target
	pprofAddr string     // the started bridge's pprof listener, with --cpuprofile
	sink      *traceSink // where the started bridge sends spans, with --trace
}

// startLatencyTargets starts what was not given by URL: the mock, the
// baseline on it, and `serve` on it.
func (h *harness) startLatencyTargets(ctx context.Context) (latencyTargets, error) {
	c := h.cfg
	var lt latencyTargets
	mockURL := c.Mock
	if mockURL == "" {
		u, err := h.startMock(ctx, "mock-laas", c.MockLatency)
		if err != nil {
			return lt, err
		}
		mockURL = u
	}
	baseURL, basePID := c.Baseline, 0
	if baseURL == "" {
		p, u, err := h.startBaseline(mockURL)
		if err != nil {
			return lt, err
		}
		baseURL, basePID = u, p.cmd.Process.Pid
	}
	bridgeURL := c.Target
	if bridgeURL == "" {
		env := h.laasEnv(mockURL, "BRIDGE_WORKER_CONCURRENCY="+strconv.Itoa(max(64, c.Concurrency)))
		if c.CPUProfile != "" {
			env = append(env, "BRIDGE_PPROF_LISTEN=127.0.0.1:0")
		}
		if c.Trace {
			sink, err := startTraceSink()
			if err != nil {
				return lt, err
			}
			lt.sink = sink
			env = append(env, sink.env()...)
		}
		p, addr, err := h.startBridge(ctx, "serve", env, gatewayReady, "serve", "--listen", "127.0.0.1:0", "--nats-listen", "",
			"--data-dir", filepath.Join(h.dir, "serve-data"))
		if err != nil {
			return lt, err
		}
		bridgeURL, lt.bridge = "http://"+addr, p
		if c.CPUProfile != "" {
			if lt.pprofAddr, err = p.waitFor(pprofReady, 10*time.Second); err != nil {
				return lt, err
			}
		}
	}
	mock, err := h.mockTarget(mockURL)
	if err != nil {
		return lt, err
	}
	base, bridge := h.chatTarget(load.TargetBaseline, baseURL), h.chatTarget(load.TargetBridge, bridgeURL)
	base.PID = basePID
	if lt.bridge != nil {
		bridge.PID = lt.bridge.cmd.Process.Pid
	}
	lt.targets = []load.Target{mock, base, bridge}
	return lt, nil
}

// latencyAndThroughput runs the fixed and closed modes against the mock,
// the baseline and the bridge.
func (h *harness) latencyAndThroughput(ctx context.Context, fixed, closed bool) ([]*load.Result, error) {
	c := h.cfg
	lt, err := h.startLatencyTargets(ctx)
	if lt.sink != nil {
		defer lt.sink.close()
	}
	if err != nil {
		return nil, err
	}
	// Every target answers before any is measured.
	client := load.NewClient(max(c.Concurrency, 1024))
	for _, t := range lt.targets {
		if err := load.Do(ctx, client, t); err != nil {
			return nil, fmt.Errorf("bench: %s does not answer: %w", t.Name, err)
		}
	}
	var results []*load.Result
	if fixed {
		for _, t := range lt.targets {
			fmt.Fprintf(h.stderr, "bench: %s at %d/s for %s\n", t.Name, c.Rate, c.Duration)
			results = append(results, load.FixedRate(ctx, client, t, c.Rate, c.Duration, c.Warmup))
		}
	}
	if closed {
		for _, t := range lt.targets {
			pprofAddr := ""
			if t.Name == load.TargetBridge {
				pprofAddr = lt.pprofAddr
			}
			r, err := h.closedLoop(ctx, client, t, pprofAddr)
			if err != nil {
				return nil, err
			}
			results = append(results, r)
		}
	}
	if lt.sink != nil {
		fmt.Fprintf(h.stderr, "bench: tracing on: the bridge sent %d OTLP exports, %d bytes\n", lt.sink.exports.Load(), lt.sink.bytes.Load())
	}
	if lt.bridge != nil {
		if m, err := load.ReadMemory(lt.bridge.cmd.Process.Pid); err == nil {
			fmt.Fprintf(h.stderr, "bench: bridge (serve) resident memory %s, peak %s\n", load.MiB(m.RSS), load.MiB(m.Peak))
		}
	}
	return results, nil
}

// closedLoop runs the closed mode against t; with pprofAddr it saves a CPU
// profile of the measured part to Config.CPUProfile.
func (h *harness) closedLoop(ctx context.Context, client *http.Client, t load.Target, pprofAddr string) (*load.Result, error) {
	c := h.cfg
	fmt.Fprintf(h.stderr, "bench: %s with %d callers for %s\n", t.Name, c.Concurrency, c.Duration)
	var profDone chan error
	if pprofAddr != "" {
		profDone = make(chan error, 1)
		go func() { // starts with the measurement, after the warm-up
			select {
			case <-time.After(c.Warmup):
			case <-ctx.Done():
			}
			profDone <- fetchProfile(ctx, pprofAddr, c.Duration, c.CPUProfile)
		}()
	}
	r := load.ClosedLoop(ctx, client, t, c.Concurrency, c.Duration, c.Warmup)
	if profDone != nil {
		if err := <-profDone; err != nil {
			return nil, err
		}
		fmt.Fprintf(h.stderr, "bench: CPU profile of the bridge written to %s\n", c.CPUProfile)
	}
	return r, nil
}

// fetchProfile saves a CPU profile of d from a pprof listener.
func fetchProfile(ctx context.Context, addr string, d time.Duration, path string) error {
	secs := max(1, int(d.Seconds()))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, secs), nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("bench: CPU profile: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("bench: CPU profile: status %d", resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
