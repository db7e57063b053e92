package harness

import (
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestConfigValidate: the modes are parsed, and every bad setting is
// named at once.
func TestConfigValidate(t *testing.T) {
	valid := Config{Modes: "fixed, batch", Rate: 1, Concurrency: 1, Callers: 1, CallersConcurrency: 1, Duration: time.Second,
		BatchLines: 2000, BatchRate: 10, BatchConcurrency: 16, BatchLatency: 200 * time.Millisecond}
	modes, err := valid.modes()
	if err != nil {
		t.Fatalf("valid config: %v", err)
	}
	if !maps.Equal(modes, map[string]bool{"fixed": true, "batch": true}) {
		t.Errorf("modes = %v", modes)
	}
	for _, tc := range []struct {
		name string
		edit func(*Config)
		want []string
	}{
		{"unknown mode", func(c *Config) { c.Modes = "batch,mixed" }, []string{`unknown mode "mixed" (use fixed, closed, burst, batch, soak)`}},
		{"no batch lines", func(c *Config) { c.BatchLines = 0 }, []string{"--batch-lines must be 1 to 50000, got 0"}},
		{"too many batch lines", func(c *Config) { c.BatchLines = 50_001 }, []string{"--batch-lines must be 1 to 50000, got 50001"}},
		{"batch rate", func(c *Config) { c.BatchRate = 0 }, []string{"--batch-rate must be positive, got 0"}},
		{"batch concurrency", func(c *Config) { c.BatchConcurrency = 0 }, []string{"--batch-concurrency must be 1 to 10000, got 0"}},
		{"batch rpm", func(c *Config) { c.BatchRPM = -1 }, []string{"--batch-rpm must not be negative, got -1"}},
		{"negative latency", func(c *Config) { c.BatchLatency = -time.Millisecond }, []string{"--batch-latency must not be negative"}},
		{"profile of a bridge not started", func(c *Config) { c.CPUProfile, c.Target = "cpu.pprof", "http://127.0.0.1:4000" }, []string{"--cpuprofile needs a bridge started by the bench"}},
		{"traces of a bridge not started", func(c *Config) { c.Trace, c.Target = true, "http://127.0.0.1:4000" }, []string{"--trace needs a bridge started by the bench"}},
		{"soak settings", func(c *Config) {
			c.Modes, c.SoakRate, c.SoakWorkers, c.SoakBatchEvery, c.SoakBatchLines, c.SoakTimeout = "soak", 0, 17, time.Minute, 0, 0
		}, []string{"--soak-rate must be 1 to 1000, got 0", "--soak-workers must be 1 to 16, got 17",
			"--soak-batch-lines must be 1 to 50000, got 0", "--soak-timeout must be positive"}},
		{"all at once", func(c *Config) { c.Duration, c.BatchRate, c.BatchLines = 0, -1, -1 }, []string{
			"--duration must be positive", "--batch-rate must be positive, got -1", "--batch-lines must be 1 to 50000, got -1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := valid
			tc.edit(&c)
			err := c.Validate()
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

// A relative --log-dir is made absolute: the started processes run in it,
// and would look for "logs/config.yaml" inside "logs".
func TestSetupMakesLogDirAbsolute(t *testing.T) {
	t.Chdir(t.TempDir())
	h := &harness{cfg: Config{LogDir: "logs", Model: "m"}}
	if err := h.setup(); err != nil {
		t.Fatal(err)
	}
	if !filepath.IsAbs(h.dir) || !filepath.IsAbs(h.configPath()) {
		t.Fatalf("log dir %q, config %q; want absolute paths", h.dir, h.configPath())
	}
	if _, err := os.Stat(h.configPath()); err != nil {
		t.Fatalf("config not written: %v", err)
	}
}
