package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

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
	cmd := exec.Command(binary, "bench", "--mode", "fixed,closed", "--rate", "50", "--concurrency", "2",
		"--duration", "1s", "--warmup", "200ms", "--cpuprofile", prof, "--log-dir", filepath.Join(dir, "logs"))
	cmd.Dir, cmd.Env = dir, baseEnv()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bench: %v\n%s\n%s", err, stdout.String(), stderr.String())
	}
	out := stdout.String()
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
	if !strings.Contains(stderr.String(), "CPU profile of the bridge written to") {
		t.Errorf("stderr:\n%s", stderr.String())
	}
}
