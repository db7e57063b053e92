package main

import (
	"bytes"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge/internal/bench"
)

// TestBenchProcess runs `laas-bridge bench` briefly: it starts the mock,
// the baseline proxy and `serve` as processes, every target answers every
// request, the table has a row per target and mode with the added latency
// and the throughput ratio, and the CPU profile comes from the bridge's
// BRIDGE_PPROF_LISTEN.
func TestBenchProcess(t *testing.T) {
	dir := t.TempDir()
	prof := filepath.Join(dir, "cpu.pprof")
	out, stderr := runBenchProcess(t, dir, "--mode", "fixed,closed", "--rate", "50", "--concurrency", "2",
		"--duration", "1s", "--warmup", "200ms", "--cpuprofile", prof)
	for _, target := range []string{bench.TargetMock, bench.TargetBaseline, bench.TargetBridge} {
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
	if !regexp.MustCompile(`(?m)^\s*bridge\s+closed x2(\s+\S+){6}\s+\d+\.\d\d\s*$`).MatchString(out) {
		t.Errorf("bridge closed row without the ratio to the baseline:\n%s", out)
	}
	if fi, err := os.Stat(prof); err != nil || fi.Size() == 0 {
		t.Errorf("no CPU profile: %v", err)
	}
	if !strings.Contains(stderr, "CPU profile of the bridge written to") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

// runBenchProcess runs `laas-bridge bench` with args in dir (its logs in
// dir/logs) and returns its standard output and error.
func runBenchProcess(t *testing.T, dir string, args ...string) (stdout, stderr string) {
	t.Helper()
	cmd := exec.Command(binary, append(append([]string{"bench"}, args...), "--log-dir", filepath.Join(dir, "logs"))...)
	cmd.Dir, cmd.Env = dir, baseEnv()
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, out.String(), errOut.String())
	}
	return out.String(), errOut.String()
}

// TestBenchConfigValidate: the modes are parsed, and every bad flag is
// named at once.
func TestBenchConfigValidate(t *testing.T) {
	valid := benchConfig{modes: "fixed, batch", rate: 1, concurrency: 1, callers: 1, callersConcurrency: 1, duration: time.Second,
		batchLines: 2000, batchRate: 10, batchConcurrency: 16, batchLatency: 200 * time.Millisecond}
	modes, err := valid.validate()
	if err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if !maps.Equal(modes, map[string]bool{"fixed": true, "batch": true}) {
		t.Errorf("modes = %v", modes)
	}
	for _, tc := range []struct {
		name string
		edit func(*benchConfig)
		want []string
	}{
		{"unknown mode", func(c *benchConfig) { c.modes = "batch,mixed" }, []string{`unknown mode "mixed" (use fixed, closed, burst, batch)`}},
		{"no batch lines", func(c *benchConfig) { c.batchLines = 0 }, []string{"--batch-lines must be 1 to 50000, got 0"}},
		{"too many batch lines", func(c *benchConfig) { c.batchLines = 50_001 }, []string{"--batch-lines must be 1 to 50000, got 50001"}},
		{"batch rate", func(c *benchConfig) { c.batchRate = 0 }, []string{"--batch-rate must be positive, got 0"}},
		{"batch concurrency", func(c *benchConfig) { c.batchConcurrency = 0 }, []string{"--batch-concurrency must be 1 to 10000, got 0"}},
		{"batch rpm", func(c *benchConfig) { c.batchRPM = -1 }, []string{"--batch-rpm must not be negative, got -1"}},
		{"negative latency", func(c *benchConfig) { c.batchLatency = -time.Millisecond }, []string{"--batch-latency must not be negative"}},
		{"all at once", func(c *benchConfig) { c.duration, c.batchRate, c.batchLines = 0, -1, -1 }, []string{
			"--duration must be positive", "--batch-rate must be positive, got -1", "--batch-lines must be 1 to 50000, got -1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid
			tc.edit(&c)
			_, err := c.validate()
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// TestBenchBatchProcess runs the batch mode briefly against real
// processes (mock, serve): every interactive call is answered in both
// phases, the batch runs beside the whole second window and ends with
// every line completed and in its output file.
func TestBenchBatchProcess(t *testing.T) {
	dir := t.TempDir()
	// 2 slots and a 100ms mock: the 80 lines take longer than the window
	// (at most 20 lines/s, and the window opens within about 1s of the first).
	out, _ := runBenchProcess(t, dir, "--mode", "batch", "--batch-lines", "80", "--batch-rate", "10", "--batch-concurrency", "2",
		"--batch-latency", "100ms", "--duration", "2s", "--warmup", "200ms")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^batch mode: interactive 10/s for 2s, alone then beside a batch of 80 lines; mock latency 100ms, worker concurrency 2, LaaS rpm unlimited,`),
		// p50, p95, p99, and the queue wait's p50 and p99 from the bridge's header
		regexp.MustCompile(`(?m)^\s+alone\s+20\s+0\s+10(\s+\d+\.\d{3}ms){5}$`),
		regexp.MustCompile(`(?m)^\s+during batch\s+20\s+0\s+10(\s+\d+\.\d{3}ms){5}$`),
		regexp.MustCompile(`(?m)^\s+added by the batch(\s+[+-]\d+\.\d{3}ms){5}$`),
		regexp.MustCompile(`(?m)^batch during the window: [1-9]\d* of 80 lines done in 2(\.\d{1,3})?s \(\d+\.\d lines/s\); still running at its end: yes$`),
		regexp.MustCompile(`(?m)^worker slots busy during the window: mean \d\.\d, max [12] of 2$`),
		regexp.MustCompile(`(?m)^batch at its end: completed, 80 completed, 0 failed of 80; output file 80 lines; `),
	} {
		if !want.MatchString(out) {
			t.Errorf("no line matching %s in:\n%s", want, out)
		}
	}
	if strings.Contains(out, "first error") || strings.Contains(out, "batch errors") {
		t.Errorf("errors reported:\n%s", out)
	}
}
