package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge-bench/internal/harness"
	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge-bench/internal/load"
)

// bridgeBin is laas-bridge and natsBin nats-server, built once for the
// process tests.
var bridgeBin, natsBin string

// TestMain builds laas-bridge and nats-server. The bench runs in-process and starts its
// own executable, this test binary, as `baseline-proxy`: then TestMain
// runs main instead of the tests.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == baselineCommand {
		main()
		os.Exit(0)
	}
	dir, err := os.MkdirTemp("", "laas-bridge-bench-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if bridgeBin, err = harness.BuildBridge(context.Background(), dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	if natsBin, err = harness.BuildNATS(context.Background(), dir); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// TestBenchProcess runs the bench briefly: it starts the mock, the
// baseline proxy and `serve` as processes, every target answers every
// request, the table has a row per target and mode with the added latency,
// the throughput ratio and the CPU per request, and the CPU profile comes from the bridge's
// BRIDGE_PPROF_LISTEN.
func TestBenchProcess(t *testing.T) {
	dir := t.TempDir()
	prof := filepath.Join(dir, "cpu.pprof")
	out, stderr := benchInProcess(t, dir, "--mode", "fixed,closed", "--rate", "50", "--concurrency", "2",
		"--duration", "1s", "--warmup", "200ms", "--cpuprofile", prof)
	for _, target := range []string{load.TargetMock, load.TargetBaseline, load.TargetBridge} {
		for _, mode := range []string{"fixed 50/s", "closed x2"} {
			// target, mode, requests, errors 0
			row := regexp.MustCompile(`(?m)^\s*` + target + `\s+` + mode + `\s+[1-9]\d*\s+0\s`)
			if !row.MatchString(out) {
				t.Errorf("no error-free row for %s %s in:\n%s", target, mode, out)
			}
		}
	}
	// The bridge's fixed-rate row has +p50 and +p99; its closed-loop row the ratio.
	if !regexp.MustCompile(`(?m)^\s*bridge\s+fixed 50/s(\s+\S+){6}\s+-?\d+\.\d{3}ms\s+-?\d+\.\d{3}ms\s*$`).MatchString(out) {
		t.Errorf("bridge fixed row without added latency:\n%s", out)
	}
	// The closed-loop rows have the CPU per request of the process (from
	// /proc), the bridge's also its ratio to the baseline's.
	if !regexp.MustCompile(`(?m)^\s*bridge\s+closed x2(\s+\S+){6}\s+\d+\.\d\d\s+\d+\.\d{3}ms\s+\d+\.\d\d\s*$`).MatchString(out) {
		t.Errorf("bridge closed row without the ratio to the baseline, its CPU per request and that ratio:\n%s", out)
	}
	if !regexp.MustCompile(`(?m)^\s*baseline\s+closed x2(\s+\S+){6}\s+\d+\.\d{3}ms\s*$`).MatchString(out) {
		t.Errorf("baseline closed row without its CPU per request:\n%s", out)
	}
	if fi, err := os.Stat(prof); err != nil || fi.Size() == 0 {
		t.Errorf("no CPU profile: %v", err)
	}
	if !strings.Contains(stderr, "CPU profile of the bridge written to") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

// benchInProcess runs the bench with args, the laas-bridge built by
// TestMain and its logs in dir/logs, and returns its standard output and
// error.
func benchInProcess(t *testing.T, dir string, args ...string) (stdout, stderr string) {
	t.Helper()
	args = append(args, "--log-dir", filepath.Join(dir, "logs"), "--bridge-bin", bridgeBin)
	var out, errOut bytes.Buffer
	if err := run(t.Context(), args, os.LookupEnv, &out, &errOut); err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	return out.String(), errOut.String()
}

// TestBenchBatchProcess runs the batch mode briefly against real
// processes (mock, serve): every interactive call is answered in both
// phases, the batch runs beside the whole second window and ends with
// every line completed and in its output file.
func TestBenchBatchProcess(t *testing.T) {
	dir := t.TempDir()
	// 2 slots and a 100ms mock: the 80 lines take longer than the window
	// (at most 20 lines/s, and the window opens within about 1s of the first).
	out, _ := benchInProcess(t, dir, "--mode", "batch", "--batch-lines", "80", "--batch-rate", "10", "--batch-concurrency", "2",
		"--batch-latency", "100ms", "--duration", "2s", "--warmup", "200ms")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^batch mode: interactive 10/s for 2s, alone then beside a batch of 80 lines; mock latency 100ms, worker concurrency 2, LaaS rpm unlimited,`),
		// requests, errors, req/s (20 over the run's length: 10, or 9 when
		// the last answers were slow), p50, p95, p99, and the queue wait's
		// p50 and p99 from the bridge's header
		regexp.MustCompile(`(?m)^\s+alone\s+20\s+0\s+\d+(\s+\d+\.\d{3}ms){5}$`),
		regexp.MustCompile(`(?m)^\s+during batch\s+20\s+0\s+\d+(\s+\d+\.\d{3}ms){5}$`),
		regexp.MustCompile(`(?m)^\s+added by the batch(\s+[+-]\d+\.\d{3}ms){5}$`),
		regexp.MustCompile(`(?m)^worker slots busy during the window: mean \d\.\d, max [12] of 2$`),
		regexp.MustCompile(`(?m)^batch at its end: completed, 80 completed, 0 failed of 80; output file 80 lines; `),
	} {
		if !want.MatchString(out) {
			t.Errorf("no line matching %s in:\n%s", want, out)
		}
	}
	// The window is a time.Duration rounded to the millisecond ("2s",
	// "2.01s", "3.2s", "1m0.5s"), at least the 2s of load it holds.
	window := regexp.MustCompile(`(?m)^batch during the window: [1-9]\d* of 80 lines done in (\S+) \(\d+\.\d lines/s\); still running at its end: yes$`)
	if m := window.FindStringSubmatch(out); m == nil {
		t.Errorf("no line matching %s in:\n%s", window, out)
	} else if d, err := time.ParseDuration(m[1]); err != nil || d < 2*time.Second || d != d.Round(time.Millisecond) {
		t.Errorf("window %q (%v): want a duration of at least 2s, rounded to the millisecond", m[1], err)
	}
	if strings.Contains(out, "first error") || strings.Contains(out, "batch errors") {
		t.Errorf("errors reported:\n%s", out)
	}
}

// TestBenchSoakProcess runs the soak mode briefly against real processes
// (nats-server, the mock, a gateway, three workers): every kind of traffic
// is answered, nothing is lost or duplicated, workers are restarted with
// SIGTERM and SIGKILL, and the memory table and trend cover every process.
func TestBenchSoakProcess(t *testing.T) {
	dir := t.TempDir()
	// A 2s AckWait: the jobs of the SIGKILLed worker run again within
	// seconds, so the run ends soon after its 15s of traffic.
	out, _ := benchInProcess(t, dir, "--mode", "soak", "--duration", "15s", "--soak-rate", "10",
		"--soak-restart-every", "4s", "--soak-batch-every", "8s", "--soak-batch-lines", "20", "--soak-sample", "2s",
		"--soak-ack-wait", "2s", "--soak-timeout", "40s", "--nats-bin", natsBin)
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^soak: 15s at 10/s .* a batch of 20 lines every 8s, a worker restarted every 4s .*gateway \+ 3 workers on NATS`),
		regexp.MustCompile(`(?m)^\s+time\s+nats\s+mock\s+gateway\s+gor\s+worker-1\s+gor\s+worker-2\s+gor\s+worker-3\s+gor\s+answered\s+in flight\s+lost\s+dup$`),
		// a row: time, 3 RSS, the gateway's goroutines, ...
		regexp.MustCompile(`(?m)^\s+\d+s\s+\d+\.\d\s+\d+\.\d\s+\d+\.\d\s+\d+\s`),
		regexp.MustCompile(`(?m)^worker restarts: [34] \(worker-1 SIGTERM at \d+s, exited exit status 0, .*; worker-2 SIGKILL at \d+s, exited signal: killed, `),
		regexp.MustCompile(`(?m)^  gateway\s+RSS\s+\d+\.\d -> \s*\d+\.\d MiB .*; goroutines \d+ -> \d+$`),
		regexp.MustCompile(`(?m)^  worker-1\s+RSS .*restarted [12] times`),
		// kind, sent, answered, lost 0, crossed 0
		regexp.MustCompile(`(?m)^\s+chat\s+60\s+60\s+0\s+0\s`),
		regexp.MustCompile(`(?m)^\s+stream\s+30\s+30\s+0\s+0\s`),
		regexp.MustCompile(`(?m)^\s+job\s+30\s+30\s+0\s+0\s`),
		regexp.MustCompile(`(?m)^\s+hangup\s+30\s+\d+\s+0\s+0\s`),
		regexp.MustCompile(`(?m)^\s+batch line\s+40\s+40\s+0\s+0\s`),
		regexp.MustCompile(`(?m)^answers delivered more than once: 0 extra deliveries$`),
		regexp.MustCompile(`(?m)^OK: \d+ answered, 0 lost, 0 duplicated`),
	} {
		if !want.MatchString(out) {
			t.Errorf("no line matching %s in:\n%s", want, out)
		}
	}
	// With --log-dir, the goroutines of the gateway and each worker at the end.
	for _, name := range []string{"gateway", "worker-1", "worker-2", "worker-3"} {
		b, err := os.ReadFile(filepath.Join(dir, "logs", "soak-"+name+"-goroutines.txt"))
		if err != nil || !bytes.HasPrefix(b, []byte("goroutine profile: total ")) {
			t.Errorf("goroutine dump of %s: %v, %.100q", name, err, b)
		}
	}
}

// TestBenchUsage: -h prints the usage and bad flags are usage errors, both
// before anything starts.
func TestBenchUsage(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"help", []string{"-h"}, "laas-bridge-bench measures the bridge"},
		{"unknown flag", []string{"--frobnicate"}, "flag provided but not defined: -frobnicate"},
		{"extra argument", []string{"serve"}, "unexpected arguments: serve"},
		{"baseline help", []string{"baseline-proxy", "-h"}, "-preset-hash"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := run(t.Context(), tc.args, os.LookupEnv, &out, &errOut)
			if !errors.Is(err, errUsage) || !strings.Contains(errOut.String(), tc.want) {
				t.Errorf("err %v, stderr:\n%s\nwant %q", err, errOut.String(), tc.want)
			}
		})
	}
	var out, errOut bytes.Buffer
	err := run(t.Context(), []string{"--mode", "mixed", "--bridge-bin", "/nonexistent"}, os.LookupEnv, &out, &errOut)
	if err == nil || !strings.Contains(err.Error(), `unknown mode "mixed"`) {
		t.Errorf("bad mode: %v", err)
	}
}
