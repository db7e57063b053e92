package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge-bench/internal/soak"
)

// NATSPackage is the NATS server built for the soak mode when
// Config.NATSBin is empty: the nats-server module the bridge embeds.
const NATSPackage = "github.com/nats-io/nats-server/v2"

var (
	natsReady    = regexp.MustCompile(`Listening for client connections on (\S+)`)
	metricsReady = regexp.MustCompile(`msg="metrics listening".* addr=(\S+)`)
)

// errSoakFailed is returned when the soak lost or duplicated an answer.
var errSoakFailed = errors.New("bench: soak: answers lost or duplicated")

// soakRun runs the soak mode: a NATS server, the mock, a gateway and
// Config.SoakWorkers workers, each its own process; mixed traffic for
// Config.Duration while a worker is restarted every SoakRestartEvery; the
// memory and goroutines of every process sampled over time; then the
// check that every accepted request got its own answer, once.
func (h *harness) soakRun(ctx context.Context, stdout io.Writer) error {
	c := h.cfg
	// The traffic's batches and the restarts report progress at once.
	h.stderr = &syncWriter{w: h.stderr}
	st, err := h.startSoakStack(ctx)
	if err != nil {
		return err
	}
	nonce := make([]byte, 4)
	_, _ = rand.Read(nonce)
	traffic := soak.Traffic{
		Base: st.gatewayURL, Model: c.Model, Rate: c.SoakRate, Duration: c.Duration,
		BatchEvery: c.SoakBatchEvery, BatchLines: c.SoakBatchLines,
		HangupWithin: max(2*c.SoakLatency, 20*time.Millisecond), Timeout: c.SoakTimeout,
		Nonce: hex.EncodeToString(nonce), Progress: h.stderr,
	}
	ledger := soak.NewLedger()
	sampler := &soak.Sampler{Procs: st.procs(), Every: c.soakSampleEvery(), Ledger: ledger, Out: stdout}

	fmt.Fprintf(stdout, "\nsoak: %s at %d/s (4 chat, 2 stream, 2 job, 2 hang-up in 10), a batch of %d lines every %s, a worker restarted every %s (SIGTERM, SIGKILL in turn); gateway + %d workers on NATS, mock latency %s, %d CPUs, %s\n",
		c.Duration, c.SoakRate, c.SoakBatchLines, durText(c.SoakBatchEvery), durText(c.SoakRestartEvery), c.SoakWorkers, c.SoakLatency, runtime.NumCPU(), runtime.Version())
	sctx, stopSampling := context.WithTimeout(ctx, c.Duration)
	defer stopSampling()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); sampler.Run(sctx) }()
	var restarts []string
	go func() { defer wg.Done(); restarts = st.restartWorkers(sctx, h) }()
	start := time.Now()
	runErr := traffic.Run(ctx, ledger)
	wg.Wait()
	fmt.Fprintf(stdout, "\nsoak ended after %s (%s of traffic, then the answers in flight)\n", time.Since(start).Round(time.Second), c.Duration)
	fmt.Fprintf(stdout, "worker restarts: %d", len(restarts))
	if len(restarts) > 0 {
		fmt.Fprintf(stdout, " (%s)", strings.Join(restarts, "; "))
	}
	fmt.Fprintln(stdout)
	sampler.WriteTrends(stdout)
	if err := ledger.WriteCounts(stdout); err != nil {
		return err
	}
	if c.LogDir != "" {
		if err := st.dumpGoroutines(ctx, h.dir); err != nil {
			fmt.Fprintf(h.stderr, "bench: soak: goroutine dumps: %v\n", err)
		} else {
			fmt.Fprintf(stdout, "goroutines of the gateway and the workers at the end: %s\n", filepath.Join(h.dir, "soak-*-goroutines.txt"))
		}
	}
	if calls, err := mockCalls(st.mockLog); err == nil {
		fmt.Fprintf(stdout, "LaaS mock: %s\n", calls)
	}
	if runErr != nil {
		return fmt.Errorf("bench: soak: %w", runErr)
	}
	s := ledger.Summary()
	if !s.OK() {
		fmt.Fprintf(stdout, "FAIL: %d lost, %d crossed (another's answer), %d duplicated deliveries\n", s.Total.Lost, s.Total.Crossed, s.Duplicated)
		return errSoakFailed
	}
	fmt.Fprintf(stdout, "OK: %d answered, 0 lost, 0 duplicated (%d refused before acceptance, %d callers hung up)\n", s.Total.Answered, s.Total.Refused, s.Total.HungUp)
	return nil
}

func durText(d time.Duration) string {
	if d == 0 {
		return "never"
	}
	return d.String()
}

// soakStack is the soak mode's processes.
type soakStack struct {
	natsChild, mockChild, gateway *child
	gatewayURL, gatewayMetrics    string
	gatewayPprof                  string // the gateway's pprof listener
	mockLog                       string
	env                           []string

	mu      sync.Mutex
	workers []*soakWorker
}

// soakWorker is a worker slot: the process in it now and its metrics URL.
type soakWorker struct {
	name    string
	gen     int
	child   *child
	metrics string
	pprof   string // the process's pprof listener
}

// startSoakStack starts NATS, the mock, the gateway and the workers.
func (h *harness) startSoakStack(ctx context.Context) (*soakStack, error) {
	c := h.cfg
	st := &soakStack{}
	natsBin, err := h.natsBin(ctx)
	if err != nil {
		return nil, err
	}
	var natsAddr string
	st.natsChild, natsAddr, err = h.start(natsBin, "soak-nats", []string{"PATH=" + h.getenv("PATH")}, natsReady,
		"-js", "-sd", filepath.Join(h.dir, "soak-nats-data"), "-a", "127.0.0.1", "-p", "-1")
	if err != nil {
		return nil, err
	}
	var mockURL string
	st.mockChild, mockURL, err = h.startBridge(ctx, "soak-mock-laas", []string{"PATH=" + h.getenv("PATH")}, mockReady,
		"mock-laas", "--listen", "127.0.0.1:0", "--latency", c.SoakLatency.String(), "--access-log")
	if err != nil {
		return nil, err
	}
	st.mockLog = filepath.Join(h.dir, "soak-mock-laas.log")
	st.env = h.laasEnv(mockURL, "NATS_URL=nats://"+natsAddr, "BRIDGE_METRICS_LISTEN=127.0.0.1:0", "BRIDGE_PPROF_LISTEN=127.0.0.1:0")
	if c.SoakAckWait > 0 {
		st.env = append(st.env, "BRIDGE_ACK_WAIT="+c.SoakAckWait.String())
	}
	var addr string
	st.gateway, addr, err = h.startBridge(ctx, "soak-gateway", st.env, gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	st.gatewayURL = "http://" + addr
	if st.gatewayMetrics, err = metricsURL(st.gateway); err != nil {
		return nil, err
	}
	if st.gatewayPprof, err = st.gateway.waitFor(pprofReady, 30*time.Second); err != nil {
		return nil, err
	}
	for i := range c.SoakWorkers {
		w := &soakWorker{name: fmt.Sprintf("worker-%d", i+1)}
		if err := st.startWorker(ctx, h, w); err != nil {
			return nil, err
		}
		st.workers = append(st.workers, w)
	}
	return st, nil
}

func metricsURL(c *child) (string, error) {
	addr, err := c.waitFor(metricsReady, 30*time.Second)
	if err != nil {
		return "", err
	}
	return "http://" + addr + "/metrics", nil
}

// startWorker starts the next process of slot w.
func (st *soakStack) startWorker(ctx context.Context, h *harness, w *soakWorker) error {
	w.gen++
	ch, _, err := h.startBridge(ctx, fmt.Sprintf("soak-%s-%d", w.name, w.gen), st.env, workerReady, "worker")
	if err != nil {
		return err
	}
	u, err := metricsURL(ch)
	if err != nil {
		return err
	}
	pp, err := ch.waitFor(pprofReady, 30*time.Second)
	if err != nil {
		return err
	}
	st.mu.Lock()
	w.child, w.metrics, w.pprof = ch, u, pp
	st.mu.Unlock()
	return nil
}

// procs are the processes the sampler watches; a worker slot follows its
// restarts.
func (st *soakStack) procs() []soak.Proc {
	fixed := func(c *child, metrics string) func() (int, string) {
		return func() (int, string) { return c.cmd.Process.Pid, metrics }
	}
	ps := []soak.Proc{
		{Name: "nats", Current: fixed(st.natsChild, "")},
		{Name: "mock", Current: fixed(st.mockChild, "")},
		{Name: "gateway", Current: fixed(st.gateway, st.gatewayMetrics)},
	}
	for _, w := range st.workers {
		ps = append(ps, soak.Proc{Name: w.name, Current: func() (int, string) {
			st.mu.Lock()
			defer st.mu.Unlock()
			return w.child.cmd.Process.Pid, w.metrics
		}})
	}
	return ps
}

// restartWorkers restarts a worker every SoakRestartEvery until ctx ends,
// the slots in turn, with SIGTERM and SIGKILL in turn, and returns what it
// did, one entry per restart.
func (st *soakStack) restartWorkers(ctx context.Context, h *harness) []string {
	every := h.cfg.SoakRestartEvery
	if every <= 0 {
		return nil
	}
	var done []string
	start := time.Now()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-tick.C:
		case <-ctx.Done():
			return done
		}
		w := st.workers[n%len(st.workers)]
		sig, sigName := syscall.SIGTERM, "SIGTERM"
		if n%2 == 1 {
			sig, sigName = syscall.SIGKILL, "SIGKILL"
		}
		at := time.Since(start).Round(time.Second)
		st.mu.Lock()
		old := w.child
		st.mu.Unlock()
		_ = old.cmd.Process.Signal(sig)
		select {
		case <-old.done:
		case <-time.After(time.Minute):
			_ = old.cmd.Process.Kill()
			<-old.done
			sigName += " (still running after 1m: SIGKILL)"
		}
		stopped := time.Now()
		// The context of the run, not ctx: a restart begun is finished.
		if err := st.startWorker(context.WithoutCancel(ctx), h, w); err != nil {
			fmt.Fprintf(h.stderr, "bench: soak: %s did not start again: %v\n", w.name, err)
			done = append(done, fmt.Sprintf("%s %s at %s, NOT STARTED AGAIN: %v", w.name, sigName, at, err))
			return done
		}
		entry := fmt.Sprintf("%s %s at %s, exited %s, back in %s", w.name, sigName, at, exitText(old), time.Since(stopped).Round(100*time.Millisecond))
		fmt.Fprintf(h.stderr, "bench: soak: %s\n", entry)
		done = append(done, entry)
	}
}

// dumpGoroutines writes the gateway's and each worker's goroutines, by
// stack (pprof's goroutine profile, debug=1), into dir.
func (st *soakStack) dumpGoroutines(ctx context.Context, dir string) error {
	targets := map[string]string{"gateway": st.gatewayPprof}
	st.mu.Lock()
	for _, w := range st.workers {
		targets[w.name] = w.pprof
	}
	st.mu.Unlock()
	var errs []error
	for name, addr := range targets {
		if err := fetchTo(ctx, "http://"+addr+"/debug/pprof/goroutine?debug=1", filepath.Join(dir, "soak-"+name+"-goroutines.txt")); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// fetchTo saves the answer to a GET of url in path.
func fetchTo(ctx context.Context, url, path string) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

// syncWriter serialises writes to w.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// exitText is how a stopped child ended.
func exitText(c *child) string {
	if c.cmd.ProcessState == nil {
		return "?"
	}
	return c.cmd.ProcessState.String()
}

// mockCalls summarises the mock's access log: its answers by status.
func mockCalls(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s := string(b)
	return fmt.Sprintf("%d calls answered 200, %d cut off by the caller (499), %d other",
		strings.Count(s, `"status":200`), strings.Count(s, `"status":499`),
		strings.Count(s, `"status":`)-strings.Count(s, `"status":200`)-strings.Count(s, `"status":499`)), nil
}

// natsBin returns the nats-server binary, building it on first use when
// Config.NATSBin is empty.
func (h *harness) natsBin(ctx context.Context) (string, error) {
	if h.cfg.NATSBin != "" {
		return filepath.Abs(h.cfg.NATSBin)
	}
	dir, err := os.MkdirTemp("", "laas-bridge-bench-nats")
	if err != nil {
		return "", err
	}
	h.removes = append(h.removes, dir)
	fmt.Fprintf(h.stderr, "bench: building nats-server (%s)\n", NATSPackage)
	return BuildNATS(ctx, dir)
}

// BuildNATS builds nats-server into dir with `go build`, from the module
// in the working directory, and returns its path.
func BuildNATS(ctx context.Context, dir string) (string, error) {
	exe := filepath.Join(dir, "nats-server")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", exe, NATSPackage).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("bench: go build %s (run inside the laas-bridge module, or give --nats-bin): %w\n%s", NATSPackage, err, out)
	}
	return exe, nil
}
