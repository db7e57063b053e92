package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge/internal/bench"
	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// benchConfig is `laas-bridge bench`'s flags.
type benchConfig struct {
	modes                       string
	target, baseline, mock      string
	key                         string
	model                       string
	rate, concurrency           int
	duration, warmup            time.Duration
	mockLatency                 time.Duration
	callers, callersConcurrency int
	callersLatency              time.Duration
	cpuProfile                  string
	logDir                      string
	batchLines, batchRate       int
	batchConcurrency            int
	batchLatency                time.Duration
	batchRPM                    int
}

const benchUsage = `laas-bridge bench measures the bridge against a plain proxy to the same mock.

It starts (unless given their URLs) a LaaS mock, the bridge ('serve', one
process with embedded NATS) and a baseline proxy that translates OpenAI to
LaaS with no queue, each as its own process, and runs for each target:
  fixed   open-loop load at --rate; latency counts from each request's due
          time; +p50/+p99 are the target's latency minus the mock's own.
  closed  --concurrency callers back to back; "x baseline" is the bridge's
          throughput over the baseline's.
  burst   --callers callers at once against a mock answering after
          --callers-latency, with gateway and worker as separate processes
          on a NATS server in this process; reports their peak memory.
  batch   interactive calls at --batch-rate, first alone, then while a
          --batch-lines batch runs through the Batch API, on its own mock
          (--batch-latency) and 'serve' (--batch-concurrency, --batch-rpm);
          reports the latency the batch added and the batch's progress.

Flags:
`

// runBench runs `laas-bridge bench`.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var c benchConfig
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), benchUsage); fs.PrintDefaults() }
	fs.StringVar(&c.modes, "mode", "fixed,closed", "comma-separated: fixed, closed, burst, batch")
	fs.StringVar(&c.target, "target", "", "base URL of a running bridge to measure (default: start `laas-bridge serve`); it must call the mock given by --mock")
	fs.StringVar(&c.baseline, "baseline", "", "base URL of a running baseline proxy (default: start `laas-bridge baseline-proxy`)")
	fs.StringVar(&c.mock, "mock", "", "base URL of a running LaaS mock (default: start `laas-bridge mock-laas`)")
	fs.StringVar(&c.key, "key", "", "bearer key for --target (its BRIDGE_MASTER_KEY)")
	fs.StringVar(&c.model, "model", "bench", "model to request (a started bridge gets a config with it)")
	fs.IntVar(&c.rate, "rate", 1000, "requests per second in fixed mode")
	fs.IntVar(&c.concurrency, "concurrency", 64, "callers in closed mode")
	fs.DurationVar(&c.duration, "duration", 20*time.Second, "measured time per target and mode")
	fs.DurationVar(&c.warmup, "warmup", 3*time.Second, "unmeasured load before each measurement")
	fs.DurationVar(&c.mockLatency, "mock-latency", 0, "latency of the started mock in fixed and closed modes")
	fs.IntVar(&c.callers, "callers", 10_000, "callers in burst mode")
	fs.IntVar(&c.callersConcurrency, "callers-concurrency", 10_000, "the worker's concurrency (and the consumer's max ack pending) in burst mode")
	fs.DurationVar(&c.callersLatency, "callers-latency", 5*time.Second, "latency of the burst mode's mock")
	fs.IntVar(&c.batchLines, "batch-lines", 2000, "lines of the batch in batch mode")
	fs.IntVar(&c.batchRate, "batch-rate", 10, "interactive requests per second in batch mode, alone and beside the batch (each for --duration)")
	fs.IntVar(&c.batchConcurrency, "batch-concurrency", 16, "the worker's concurrency (BRIDGE_WORKER_CONCURRENCY) in batch mode")
	fs.DurationVar(&c.batchLatency, "batch-latency", 200*time.Millisecond, "latency of the batch mode's mock")
	fs.IntVar(&c.batchRPM, "batch-rpm", 0, "the shared LaaS rate limit (BRIDGE_LAAS_RPM) in batch mode; 0 for none")
	fs.StringVar(&c.cpuProfile, "cpuprofile", "", "write a CPU profile of the started bridge during its closed-loop run to this file")
	fs.StringVar(&c.logDir, "log-dir", "", "keep the started processes' logs here (default: a temporary directory, removed)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	modes, err := c.validate()
	if err != nil {
		return err
	}
	h := &benchHarness{cfg: c, stderr: stderr}
	defer h.stopAll()
	dir := c.logDir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "laas-bridge-bench")
		if err != nil {
			return err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	h.dir = dir
	if err := h.writeConfig(); err != nil {
		return err
	}
	var results []*bench.Result
	if modes["fixed"] || modes["closed"] {
		r, err := h.latencyAndThroughput(ctx, modes["fixed"], modes["closed"])
		if err != nil {
			return err
		}
		results = r
		fmt.Fprintf(stdout, "\nmock latency %s, %d CPUs, %s\n", c.mockLatency, runtime.NumCPU(), runtime.Version())
		if err := bench.WriteTable(stdout, results); err != nil {
			return err
		}
		for _, r := range results {
			if r.FirstError != "" {
				fmt.Fprintf(stdout, "%s %s: first error: %s\n", r.Target, r.Mode, r.FirstError)
			}
		}
	}
	if modes["burst"] {
		if err := h.burst(ctx, stdout); err != nil {
			return err
		}
	}
	if modes["batch"] {
		if err := h.batchMix(ctx, stdout); err != nil {
			return err
		}
	}
	return nil
}

// validate checks the flags and returns the modes to run.
func (c benchConfig) validate() (map[string]bool, error) {
	modes := map[string]bool{}
	var errs []error
	for m := range strings.SplitSeq(c.modes, ",") {
		m = strings.TrimSpace(m)
		switch m {
		case "fixed", "closed", "burst", "batch":
			modes[m] = true
		default:
			errs = append(errs, fmt.Errorf("bench: unknown mode %q (use fixed, closed, burst, batch)", m))
		}
	}
	if c.rate < 1 || c.concurrency < 1 || c.callers < 1 || c.callersConcurrency < 1 || c.duration <= 0 {
		errs = append(errs, errors.New("bench: --rate, --concurrency, --callers, --callers-concurrency and --duration must be positive"))
	}
	if c.warmup < 0 || c.mockLatency < 0 || c.callersLatency < 0 || c.batchLatency < 0 {
		errs = append(errs, errors.New("bench: --warmup, --mock-latency, --callers-latency and --batch-latency must not be negative"))
	}
	if c.batchLines < 1 || c.batchLines > schema.MaxBatchLines {
		errs = append(errs, fmt.Errorf("bench: --batch-lines must be 1 to %d, got %d", schema.MaxBatchLines, c.batchLines))
	}
	if c.batchRate < 1 {
		errs = append(errs, fmt.Errorf("bench: --batch-rate must be positive, got %d", c.batchRate))
	}
	if c.batchRPM < 0 {
		errs = append(errs, fmt.Errorf("bench: --batch-rpm must not be negative, got %d", c.batchRPM))
	}
	if c.batchConcurrency < 1 || c.batchConcurrency > 10_000 {
		errs = append(errs, fmt.Errorf("bench: --batch-concurrency must be 1 to 10000, got %d", c.batchConcurrency))
	}
	if c.cpuProfile != "" && c.target != "" {
		errs = append(errs, errors.New("bench: --cpuprofile needs a bridge started by the bench (no --target)"))
	}
	return modes, errors.Join(errs...)
}

// benchHarness starts and stops the processes under test.
type benchHarness struct {
	cfg      benchConfig
	stderr   io.Writer
	dir      string
	children []*benchChild
}

const benchProject, benchKey, benchPreset = "bench-project", "bench-key", "bench-preset"

func (h *benchHarness) configPath() string { return filepath.Join(h.dir, "config.yaml") }

func (h *benchHarness) writeConfig() error {
	cfg := fmt.Sprintf("model_list:\n  - model_name: %s\n    litellm_params:\n      model: laas/%s\n", h.cfg.model, h.cfg.model)
	return os.WriteFile(h.configPath(), []byte(cfg), 0o600)
}

// chatBody is the request every target gets.
func (h *benchHarness) chatBody() []byte {
	return []byte(`{"model":"` + h.cfg.model + `","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark."}],"temperature":0.2}`)
}

// mockTarget is the mock called directly with the LaaS request the bridge
// and the baseline send for chatBody.
func (h *benchHarness) mockTarget(mockURL string) (bench.Target, error) {
	req, err := schema.DecodeChatRequest(h.chatBody())
	if err != nil {
		return bench.Target{}, err
	}
	laasReq, err := laas.ToLaaS(req, schema.Model{Alias: h.cfg.model, LaaSModel: h.cfg.model, PresetHash: benchPreset})
	if err != nil {
		return bench.Target{}, err
	}
	body, err := json.Marshal(laasReq)
	if err != nil {
		return bench.Target{}, err
	}
	hd := http.Header{"Content-Type": {"application/json"}}
	hd.Set(schema.LaaSHeaderProject, benchProject)
	hd.Set(schema.LaaSHeaderAPIKey, benchKey)
	return bench.Target{Name: bench.TargetMock, URL: strings.TrimRight(mockURL, "/") + schema.LaaSChatPath, Body: body, Header: hd}, nil
}

func (h *benchHarness) chatTarget(name, base string) bench.Target {
	hd := http.Header{"Content-Type": {"application/json"}}
	if h.cfg.key != "" && name == bench.TargetBridge {
		hd.Set("Authorization", "Bearer "+h.cfg.key)
	}
	return bench.Target{Name: name, URL: strings.TrimRight(base, "/") + "/v1/chat/completions", Body: h.chatBody(), Header: hd}
}

// laasEnv is the environment of a started bridge or baseline.
func (h *benchHarness) laasEnv(mockURL string, kv ...string) []string {
	return append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"BRIDGE_CONFIG=" + h.configPath(), "LAAS_PROJECT_CODE=" + benchProject, "LAAS_API_KEY=" + benchKey,
		"LAAS_PRESET_HASH=" + benchPreset, "LAAS_BASE_URL=" + mockURL}, kv...)
}

var (
	benchMockReady     = regexp.MustCompile(`mock-laas listening on (http://\S+)`)
	benchBaselineReady = regexp.MustCompile(`baseline-proxy listening on (http://\S+)`)
	benchGatewayReady  = regexp.MustCompile(`msg="gateway listening".* addr=(\S+)`)
	benchWorkerReady   = regexp.MustCompile(`msg="worker pool started"()`)
	benchPprofReady    = regexp.MustCompile(`msg="pprof listening".* addr=(\S+)`)
)

// latencyAndThroughput runs the fixed and closed modes against the mock,
// the baseline and the bridge.
func (h *benchHarness) latencyAndThroughput(ctx context.Context, fixed, closed bool) ([]*bench.Result, error) {
	c := h.cfg
	mockURL := c.mock
	if mockURL == "" {
		u, err := h.startMock(ctx, "mock-laas", c.mockLatency)
		if err != nil {
			return nil, err
		}
		mockURL = u
	}
	baseURL := c.baseline
	if baseURL == "" {
		_, u, err := h.start(ctx, "baseline-proxy", h.laasEnv(mockURL), benchBaselineReady, "baseline-proxy", "--listen", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		baseURL = u
	}
	bridgeURL := c.target
	var bridgeProc *benchChild
	pprofAddr := ""
	if bridgeURL == "" {
		env := h.laasEnv(mockURL, "BRIDGE_WORKER_CONCURRENCY="+strconv.Itoa(max(64, c.concurrency)))
		if c.cpuProfile != "" {
			env = append(env, "BRIDGE_PPROF_LISTEN=127.0.0.1:0")
		}
		p, addr, err := h.start(ctx, "serve", env, benchGatewayReady, "serve", "--listen", "127.0.0.1:0", "--nats-listen", "",
			"--data-dir", filepath.Join(h.dir, "serve-data"))
		if err != nil {
			return nil, err
		}
		bridgeURL, bridgeProc = "http://"+addr, p
		if c.cpuProfile != "" {
			if pprofAddr, err = p.waitFor(benchPprofReady, 10*time.Second); err != nil {
				return nil, err
			}
		}
	}
	mock, err := h.mockTarget(mockURL)
	if err != nil {
		return nil, err
	}
	targets := []bench.Target{mock, h.chatTarget(bench.TargetBaseline, baseURL), h.chatTarget(bench.TargetBridge, bridgeURL)}
	// Every target answers before any is measured.
	client := bench.NewClient(max(c.concurrency, 1024))
	for _, t := range targets {
		if err := bench.Do(ctx, client, t); err != nil {
			return nil, fmt.Errorf("bench: %s does not answer: %w", t.Name, err)
		}
	}
	var results []*bench.Result
	if fixed {
		for _, t := range targets {
			fmt.Fprintf(h.stderr, "bench: %s at %d/s for %s\n", t.Name, c.rate, c.duration)
			results = append(results, bench.FixedRate(ctx, client, t, c.rate, c.duration, c.warmup))
		}
	}
	if closed {
		for _, t := range targets {
			fmt.Fprintf(h.stderr, "bench: %s with %d callers for %s\n", t.Name, c.concurrency, c.duration)
			var profDone chan error
			if t.Name == bench.TargetBridge && pprofAddr != "" {
				profDone = make(chan error, 1)
				go func() { // starts with the measurement, after the warm-up
					select {
					case <-time.After(c.warmup):
					case <-ctx.Done():
					}
					profDone <- fetchProfile(ctx, pprofAddr, c.duration, c.cpuProfile)
				}()
			}
			results = append(results, bench.ClosedLoop(ctx, client, t, c.concurrency, c.duration, c.warmup))
			if profDone != nil {
				if err := <-profDone; err != nil {
					return nil, err
				}
				fmt.Fprintf(h.stderr, "bench: CPU profile of the bridge written to %s\n", c.cpuProfile)
			}
		}
	}
	if bridgeProc != nil {
		if m, err := bench.ReadMemory(bridgeProc.cmd.Process.Pid); err == nil {
			fmt.Fprintf(h.stderr, "bench: bridge (serve) resident memory %s, peak %s\n", bench.MiB(m.RSS), bench.MiB(m.Peak))
		}
	}
	return results, nil
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

// burst runs the burst mode: its own mock, NATS server, gateway and worker.
func (h *benchHarness) burst(ctx context.Context, stdout io.Writer) error {
	c := h.cfg
	mockURL, err := h.startMock(ctx, "burst-mock-laas", c.callersLatency)
	if err != nil {
		return err
	}
	srv, err := queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: filepath.Join(h.dir, "burst-nats"), Listen: "127.0.0.1:0"})
	if err != nil {
		return err
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	env := h.laasEnv(mockURL, "NATS_URL="+srv.ClientURL(), "BRIDGE_LAAS_MAX_CONCURRENCY="+strconv.Itoa(c.callersConcurrency),
		"BRIDGE_QUEUE_MAX_MSGS="+strconv.Itoa(max(100_000, 2*c.callers)))
	gw, addr, err := h.start(ctx, "burst-gateway", env, benchGatewayReady, "gateway", "--listen", "127.0.0.1:0")
	if err != nil {
		return err
	}
	wk, _, err := h.start(ctx, "burst-worker", env, benchWorkerReady, "worker", "--concurrency", strconv.Itoa(c.callersConcurrency))
	if err != nil {
		return err
	}
	t := h.chatTarget(bench.TargetBridge, "http://"+addr)
	client := bench.NewClient(c.callers)
	if err := bench.Do(ctx, client, t); err != nil {
		return fmt.Errorf("bench: the burst gateway does not answer: %w", err)
	}
	var peakSum int64
	sample := func() {
		g, err1 := bench.ReadMemory(gw.cmd.Process.Pid)
		w, err2 := bench.ReadMemory(wk.cmd.Process.Pid)
		if err1 == nil && err2 == nil {
			peakSum = max(peakSum, g.RSS+w.RSS)
		}
	}
	fmt.Fprintf(h.stderr, "bench: %d callers at once, mock latency %s, worker concurrency %d\n", c.callers, c.callersLatency, c.callersConcurrency)
	bctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	r := bench.Burst(bctx, client, t, c.callers, sample)
	sample()
	g, err := bench.ReadMemory(gw.cmd.Process.Pid)
	if err != nil {
		return err
	}
	w, err := bench.ReadMemory(wk.cmd.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\nburst: %d callers at once, mock latency %s, worker concurrency %d\n", c.callers, c.callersLatency, c.callersConcurrency)
	fmt.Fprintf(stdout, "  answered %d, failed %d, all answered in %s (p50 %s, p99 %s)\n", r.Requests-r.Errors, r.Errors,
		r.Elapsed.Round(time.Millisecond), r.Quantile(50).Round(time.Millisecond), r.Quantile(99).Round(time.Millisecond))
	fmt.Fprintf(stdout, "  peak resident memory (VmHWM): gateway %s + worker %s = %s (target <= 1024 MiB); highest sampled sum of VmRSS %s\n",
		bench.MiB(g.Peak), bench.MiB(w.Peak), bench.MiB(g.Peak+w.Peak), bench.MiB(peakSum))
	if r.FirstError != "" {
		fmt.Fprintf(stdout, "  first error: %s\n", r.FirstError)
	}
	return nil
}

// benchChild is a started process; its output goes to a log file.
type benchChild struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu      sync.Mutex
	first   []string      // the first output lines, for waitFor
	changed chan struct{} // closed and replaced when a line is added to first
}

// firstLines is how many output lines a child keeps for waitFor.
const firstLines = 500

// start runs this binary with args, its output in <dir>/<name>.log, and
// waits until a line matches ready; it returns ready's last submatch.
func (h *benchHarness) start(ctx context.Context, name string, env []string, ready *regexp.Regexp, args ...string) (*benchChild, string, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, "", err
	}
	logf, err := os.Create(filepath.Join(h.dir, name+".log"))
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir, cmd.Env = h.dir, env
	out, err := cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return nil, "", err
	}
	cmd.Stdout = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, "", fmt.Errorf("bench: start %s: %w", name, err)
	}
	ch := &benchChild{name: name, cmd: cmd, done: make(chan struct{}), changed: make(chan struct{})}
	h.children = append(h.children, ch)
	go func() {
		defer close(ch.done)
		defer logf.Close()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			_, _ = logf.WriteString(line + "\n")
			ch.mu.Lock()
			if len(ch.first) < firstLines {
				ch.first = append(ch.first, line)
				close(ch.changed)
				ch.changed = make(chan struct{})
			}
			ch.mu.Unlock()
		}
		_ = cmd.Wait()
	}()
	m, err := ch.waitFor(ready, time.Minute)
	if err != nil {
		return nil, "", fmt.Errorf("%w (log: %s)", err, filepath.Join(h.dir, name+".log"))
	}
	return ch, m, nil
}

// startMock starts a LaaS mock answering after latency and returns its URL.
func (h *benchHarness) startMock(ctx context.Context, name string, latency time.Duration) (string, error) {
	_, u, err := h.start(ctx, name, []string{"PATH=" + os.Getenv("PATH")}, benchMockReady,
		"mock-laas", "--listen", "127.0.0.1:0", "--latency", latency.String())
	return u, err
}

// waitFor waits for an output line matching re and returns its last submatch.
func (c *benchChild) waitFor(re *regexp.Regexp, timeout time.Duration) (string, error) {
	deadline := time.After(timeout)
	for seen := 0; ; {
		c.mu.Lock()
		lines, changed := c.first[seen:], c.changed
		seen = len(c.first)
		c.mu.Unlock()
		for _, line := range lines {
			if m := re.FindStringSubmatch(line); m != nil {
				return m[len(m)-1], nil
			}
		}
		select {
		case <-changed:
		case <-c.done:
			c.mu.Lock()
			rest := c.first[seen:]
			c.mu.Unlock()
			for _, line := range rest {
				if m := re.FindStringSubmatch(line); m != nil {
					return m[len(m)-1], nil
				}
			}
			return "", fmt.Errorf("bench: %s exited before it was ready", c.name)
		case <-deadline:
			return "", fmt.Errorf("bench: %s not ready within %s", c.name, timeout)
		}
	}
}

// stopAll stops the started processes, last first, with SIGTERM and then,
// after 30s, SIGKILL.
func (h *benchHarness) stopAll() {
	for i := len(h.children) - 1; i >= 0; i-- {
		c := h.children[i]
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	h.children = nil
}
