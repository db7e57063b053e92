package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge-bench/internal/harness"
)

const benchUsage = `laas-bridge-bench measures the bridge against a plain proxy to the same mock.

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
  soak    NATS (nats-server), the mock (--soak-latency), a gateway and
          --soak-workers workers, each its own process; mixed traffic at
          --soak-rate for --duration (chat, streamed chat, async jobs,
          callers that hang up, a --soak-batch-lines batch every
          --soak-batch-every) while a worker is restarted every
          --soak-restart-every (SIGTERM, SIGKILL in turn); prints each
          process's memory and goroutines every --soak-sample, their
          trend, and the answers by kind; exits non-zero when an accepted
          request lost its answer or an answer was delivered twice. Not
          run in CI; a 30m run is what the performance page reports.

The mock and the bridge run from --bridge-bin; without it the bench builds
laas-bridge from the module it is run in (go run ./cmd/laas-bridge-bench
from the repository measures the code at hand).

Usage:
  laas-bridge-bench [flags]
  laas-bridge-bench baseline-proxy [flags]   the baseline proxy alone

Flags:
`

// runBench parses the bench's flags and runs it.
func runBench(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	c := harness.Config{Getenv: func(name string) string { v, _ := lookupEnv(name); return v }}
	fs := flag.NewFlagSet("laas-bridge-bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(fs.Output(), benchUsage); fs.PrintDefaults() }
	fs.StringVar(&c.Modes, "mode", "fixed,closed", "comma-separated: fixed, closed, burst, batch, soak")
	fs.StringVar(&c.Target, "target", "", "base URL of a running bridge to measure (default: start `laas-bridge serve`); it must call the mock given by --mock")
	fs.StringVar(&c.Baseline, "baseline", "", "base URL of a running baseline proxy (default: start `laas-bridge-bench baseline-proxy`)")
	fs.StringVar(&c.Mock, "mock", "", "base URL of a running LaaS mock (default: start `laas-bridge mock-laas`)")
	fs.StringVar(&c.Key, "key", "", "bearer key for --target (its BRIDGE_MASTER_KEY)")
	fs.StringVar(&c.Model, "model", "bench", "model to request (a started bridge gets a config with it)")
	fs.IntVar(&c.Rate, "rate", 1000, "requests per second in fixed mode")
	fs.IntVar(&c.Concurrency, "concurrency", 64, "callers in closed mode")
	fs.DurationVar(&c.Duration, "duration", 20*time.Second, "measured time per target and mode")
	fs.DurationVar(&c.Warmup, "warmup", 3*time.Second, "unmeasured load before each measurement")
	fs.DurationVar(&c.MockLatency, "mock-latency", 0, "latency of the started mock in fixed and closed modes")
	fs.IntVar(&c.Callers, "callers", 10_000, "callers in burst mode")
	fs.IntVar(&c.CallersConcurrency, "callers-concurrency", 10_000, "the worker's concurrency (and the consumer's max ack pending) in burst mode")
	fs.DurationVar(&c.CallersLatency, "callers-latency", 5*time.Second, "latency of the burst mode's mock")
	fs.IntVar(&c.BatchLines, "batch-lines", 2000, "lines of the batch in batch mode")
	fs.IntVar(&c.BatchRate, "batch-rate", 10, "interactive requests per second in batch mode, alone and beside the batch (each for --duration)")
	fs.IntVar(&c.BatchConcurrency, "batch-concurrency", 16, "the worker's concurrency (BRIDGE_WORKER_CONCURRENCY) in batch mode")
	fs.DurationVar(&c.BatchLatency, "batch-latency", 200*time.Millisecond, "latency of the batch mode's mock")
	fs.IntVar(&c.BatchRPM, "batch-rpm", 0, "the shared LaaS rate limit (BRIDGE_LAAS_RPM) in batch mode; 0 for none")
	fs.IntVar(&c.SoakRate, "soak-rate", 10, "requests per second in soak mode (besides the batches)")
	fs.IntVar(&c.SoakWorkers, "soak-workers", 3, "worker processes in soak mode")
	fs.DurationVar(&c.SoakLatency, "soak-latency", 200*time.Millisecond, "latency of the soak mode's mock")
	fs.DurationVar(&c.SoakRestartEvery, "soak-restart-every", 3*time.Minute, "restart a worker this often in soak mode (0: never)")
	fs.DurationVar(&c.SoakBatchEvery, "soak-batch-every", 5*time.Minute, "start a batch this often in soak mode, the first after half of it (0: never)")
	fs.IntVar(&c.SoakBatchLines, "soak-batch-lines", 200, "lines of each batch in soak mode")
	fs.DurationVar(&c.SoakSample, "soak-sample", 0, "sample memory and goroutines this often in soak mode (default --duration/30, at least 1s)")
	fs.DurationVar(&c.SoakAckWait, "soak-ack-wait", 0, "the workers' BRIDGE_ACK_WAIT in soak mode (default: the bridge's own)")
	fs.DurationVar(&c.SoakTimeout, "soak-timeout", 5*time.Minute, "how long one soak request, job or batch may take to its answer")
	fs.StringVar(&c.NATSBin, "nats-bin", "", "the nats-server binary the soak mode starts (default: build "+harness.NATSPackage+" with go build)")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write a CPU profile of the started bridge during its closed-loop run to this file")
	fs.BoolVar(&c.Trace, "trace", false, "have the started bridge export every span (OTLP/HTTP, always_on) to a sink in the bench, to measure tracing's cost")
	fs.StringVar(&c.LogDir, "log-dir", "", "keep the started processes' logs here (default: a temporary directory, removed)")
	fs.StringVar(&c.BridgeBin, "bridge-bin", "", "the laas-bridge binary to start (default: build "+harness.BridgePackage+" with go build)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	return harness.Run(ctx, c, stdout, stderr)
}
