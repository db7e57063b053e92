package harness

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Config is what laas-bridge-bench measures and how; its flags fill it.
type Config struct {
	// Modes is comma-separated: fixed, closed, burst, batch, soak.
	Modes string
	// Target, Baseline and Mock are base URLs of running processes to use
	// instead of starting them ("": start one).
	Target, Baseline, Mock string
	// Key is the bearer key for Target.
	Key string
	// Model is the model requested; a started bridge gets a config with it.
	Model string
	// Rate is the fixed mode's requests per second; Concurrency the closed
	// mode's callers.
	Rate, Concurrency int
	// Duration is the measured time per target and mode, after Warmup.
	Duration, Warmup time.Duration
	// MockLatency is the started mock's latency in fixed and closed modes.
	MockLatency time.Duration
	// Callers, CallersConcurrency and CallersLatency shape the burst mode.
	Callers, CallersConcurrency int
	CallersLatency              time.Duration
	// CPUProfile, when set, is where the started bridge's CPU profile of
	// its closed-loop run goes.
	CPUProfile string
	// Trace, when set, has the started bridge export every span (OTLP over
	// HTTP, sampler always_on) to a sink in the bench.
	Trace bool
	// LogDir keeps the started processes' logs ("": a temporary directory,
	// removed at the end).
	LogDir string
	// BatchLines, BatchRate, BatchConcurrency, BatchLatency and BatchRPM
	// shape the batch mode.
	BatchLines, BatchRate int
	BatchConcurrency      int
	BatchLatency          time.Duration
	BatchRPM              int
	// SoakRate, SoakWorkers, SoakLatency, SoakRestartEvery,
	// SoakBatchEvery, SoakBatchLines, SoakSample, SoakAckWait and
	// SoakTimeout shape the soak mode (see the bench's flags); its traffic
	// runs for Duration.
	SoakRate, SoakWorkers            int
	SoakLatency                      time.Duration
	SoakRestartEvery, SoakBatchEvery time.Duration
	SoakBatchLines                   int
	// SoakSample is the sampling interval (0: Duration/30, at least 1s).
	SoakSample time.Duration
	// SoakAckWait, when set, is the workers' BRIDGE_ACK_WAIT (0: theirs).
	SoakAckWait time.Duration
	// SoakTimeout bounds each request of the soak, jobs and batches
	// included, and so the wait for answers after Duration.
	SoakTimeout time.Duration
	// NATSBin is the nats-server binary the soak mode starts ("": build
	// NATSPackage with `go build`).
	NATSBin string
	// BridgeBin is the laas-bridge binary to start ("": build it from the
	// module in the working directory with `go build`).
	BridgeBin string
	// Self is an executable that runs the baseline proxy as
	// `Self baseline-proxy --listen ADDR` ("": this process's).
	Self string
	// Getenv reads PATH and HOME for the started processes (nil: none).
	Getenv func(string) string
}

// Validate reports every invalid setting at once.
func (c Config) Validate() error {
	_, err := c.modes()
	return err
}

// modes checks the config and returns the modes to run.
func (c Config) modes() (map[string]bool, error) {
	modes := map[string]bool{}
	var errs []error
	for m := range strings.SplitSeq(c.Modes, ",") {
		m = strings.TrimSpace(m)
		switch m {
		case "fixed", "closed", "burst", "batch", "soak":
			modes[m] = true
		default:
			errs = append(errs, fmt.Errorf("bench: unknown mode %q (use fixed, closed, burst, batch, soak)", m))
		}
	}
	if c.Rate < 1 || c.Concurrency < 1 || c.Callers < 1 || c.CallersConcurrency < 1 || c.Duration <= 0 {
		errs = append(errs, errors.New("bench: --rate, --concurrency, --callers, --callers-concurrency and --duration must be positive"))
	}
	if c.Warmup < 0 || c.MockLatency < 0 || c.CallersLatency < 0 || c.BatchLatency < 0 {
		errs = append(errs, errors.New("bench: --warmup, --mock-latency, --callers-latency and --batch-latency must not be negative"))
	}
	if c.BatchLines < 1 || c.BatchLines > schema.MaxBatchLines {
		errs = append(errs, fmt.Errorf("bench: --batch-lines must be 1 to %d, got %d", schema.MaxBatchLines, c.BatchLines))
	}
	if c.BatchRate < 1 {
		errs = append(errs, fmt.Errorf("bench: --batch-rate must be positive, got %d", c.BatchRate))
	}
	if c.BatchRPM < 0 {
		errs = append(errs, fmt.Errorf("bench: --batch-rpm must not be negative, got %d", c.BatchRPM))
	}
	if c.BatchConcurrency < 1 || c.BatchConcurrency > 10_000 {
		errs = append(errs, fmt.Errorf("bench: --batch-concurrency must be 1 to 10000, got %d", c.BatchConcurrency))
	}
	if c.Trace && c.Target != "" {
		errs = append(errs, errors.New("bench: --trace needs a bridge started by the bench (no --target)"))
	}
	if c.CPUProfile != "" && c.Target != "" {
		errs = append(errs, errors.New("bench: --cpuprofile needs a bridge started by the bench (no --target)"))
	}
	if modes["soak"] {
		errs = append(errs, c.soakProblems()...)
	}
	return modes, errors.Join(errs...)
}

// soakProblems are the soak mode's invalid settings.
func (c Config) soakProblems() []error {
	var errs []error
	if c.SoakRate < 1 || c.SoakRate > 1000 {
		errs = append(errs, fmt.Errorf("bench: --soak-rate must be 1 to 1000, got %d", c.SoakRate))
	}
	if c.SoakWorkers < 1 || c.SoakWorkers > 16 {
		errs = append(errs, fmt.Errorf("bench: --soak-workers must be 1 to 16, got %d", c.SoakWorkers))
	}
	if c.SoakLatency < 0 || c.SoakRestartEvery < 0 || c.SoakBatchEvery < 0 || c.SoakSample < 0 || c.SoakAckWait < 0 {
		errs = append(errs, errors.New("bench: --soak-latency, --soak-restart-every, --soak-batch-every, --soak-sample and --soak-ack-wait must not be negative"))
	}
	if c.SoakBatchEvery > 0 && (c.SoakBatchLines < 1 || c.SoakBatchLines > schema.MaxBatchLines) {
		errs = append(errs, fmt.Errorf("bench: --soak-batch-lines must be 1 to %d, got %d", schema.MaxBatchLines, c.SoakBatchLines))
	}
	if c.SoakTimeout <= 0 {
		errs = append(errs, fmt.Errorf("bench: --soak-timeout must be positive, got %s", c.SoakTimeout))
	}
	return errs
}

// soakSampleEvery is SoakSample, or Duration/30 (at least 1s) without it.
func (c Config) soakSampleEvery() time.Duration {
	if c.SoakSample > 0 {
		return c.SoakSample
	}
	return max(time.Second, (c.Duration / 30).Round(time.Second))
}
