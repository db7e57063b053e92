package harness

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"

	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge-bench/internal/load"
	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Run runs the modes of cfg, printing their tables on stdout and its
// progress on stderr, and stops every process it started before it
// returns.
func Run(ctx context.Context, cfg Config, stdout, stderr io.Writer) error {
	modes, err := cfg.modes()
	if err != nil {
		return err
	}
	h := &harness{cfg: cfg, stderr: stderr}
	defer h.cleanup()
	if err := h.setup(); err != nil {
		return err
	}
	if modes["fixed"] || modes["closed"] {
		results, err := h.latencyAndThroughput(ctx, modes["fixed"], modes["closed"])
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "\nmock latency %s, %d CPUs, %s\n", cfg.MockLatency, runtime.NumCPU(), runtime.Version())
		if err := load.WriteTable(stdout, results); err != nil {
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
	if modes["soak"] {
		if err := h.soakRun(ctx, stdout); err != nil {
			return err
		}
	}
	return nil
}

// harness starts and stops the processes under test.
type harness struct {
	cfg      Config
	stderr   io.Writer
	dir      string // the logs, the config and the data directories
	children []*child
	bridge   string   // the laas-bridge binary, once known
	removes  []string // temporary directories removed at the end
}

// setup makes the log directory and writes the bridge's config into it.
func (h *harness) setup() error {
	h.dir = h.cfg.LogDir
	if h.dir == "" {
		tmp, err := os.MkdirTemp("", "laas-bridge-bench")
		if err != nil {
			return err
		}
		h.removes = append(h.removes, tmp)
		h.dir = tmp
	}
	// Absolute: the started processes run with their own working
	// directory, and read their config and write their data from it.
	dir, err := filepath.Abs(h.dir)
	if err != nil {
		return err
	}
	h.dir = dir
	if err := os.MkdirAll(h.dir, 0o750); err != nil {
		return err
	}
	return h.writeConfig()
}

// cleanup stops the started processes and removes the temporary
// directories.
func (h *harness) cleanup() {
	h.stopAll()
	for _, d := range h.removes {
		_ = os.RemoveAll(d)
	}
}

const benchProject, benchKey, benchPreset = "bench-project", "bench-key", "bench-preset"

func (h *harness) configPath() string { return filepath.Join(h.dir, "config.yaml") }

func (h *harness) writeConfig() error {
	cfg := fmt.Sprintf("model_list:\n  - model_name: %s\n    litellm_params:\n      model: laas/%s\n", h.cfg.Model, h.cfg.Model)
	return os.WriteFile(h.configPath(), []byte(cfg), 0o600)
}

// chatBody is the request every target gets.
func (h *harness) chatBody() []byte {
	return []byte(`{"model":"` + h.cfg.Model + `","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say hello to the benchmark."}],"temperature":0.2}`)
}

// mockTarget is the mock called directly with the LaaS request the bridge
// and the baseline send for chatBody.
func (h *harness) mockTarget(mockURL string) (load.Target, error) {
	req, err := schema.DecodeChatRequest(h.chatBody())
	if err != nil {
		return load.Target{}, err
	}
	laasReq, err := laas.ToLaaS(req, schema.Model{Alias: h.cfg.Model, LaaSModel: h.cfg.Model, PresetHash: benchPreset})
	if err != nil {
		return load.Target{}, err
	}
	body, err := json.Marshal(laasReq)
	if err != nil {
		return load.Target{}, err
	}
	hd := http.Header{"Content-Type": {"application/json"}}
	hd.Set(schema.LaaSHeaderProject, benchProject)
	hd.Set(schema.LaaSHeaderAPIKey, benchKey)
	return load.Target{Name: load.TargetMock, URL: strings.TrimRight(mockURL, "/") + schema.LaaSChatPath, Body: body, Header: hd}, nil
}

func (h *harness) chatTarget(name, base string) load.Target {
	hd := http.Header{"Content-Type": {"application/json"}}
	if h.cfg.Key != "" && name == load.TargetBridge {
		hd.Set("Authorization", "Bearer "+h.cfg.Key)
	}
	return load.Target{Name: name, URL: strings.TrimRight(base, "/") + "/v1/chat/completions", Body: h.chatBody(), Header: hd}
}

// getenv reads the bench's own environment (nothing without Config.Getenv).
func (h *harness) getenv(name string) string {
	if h.cfg.Getenv == nil {
		return ""
	}
	return h.cfg.Getenv(name)
}

// laasEnv is the environment of a started bridge or baseline. The bridges
// it starts run without a key (BRIDGE_AUTH=none), on loopback, as the
// baseline proxy does: the figures compare the same work.
func (h *harness) laasEnv(mockURL string, kv ...string) []string {
	return append([]string{"PATH=" + h.getenv("PATH"), "HOME=" + h.getenv("HOME"), "BRIDGE_AUTH=none",
		"BRIDGE_CONFIG=" + h.configPath(), "LAAS_PROJECT_CODE=" + benchProject, "LAAS_API_KEY=" + benchKey,
		"LAAS_PRESET_HASH=" + benchPreset, "LAAS_BASE_URL=" + mockURL}, kv...)
}

var (
	mockReady     = regexp.MustCompile(`mock-laas listening on (http://\S+)`)
	baselineReady = regexp.MustCompile(`baseline-proxy listening on (http://\S+)`)
	gatewayReady  = regexp.MustCompile(`msg="gateway listening".* addr=(\S+)`)
	workerReady   = regexp.MustCompile(`msg="worker pool started"()`)
	pprofReady    = regexp.MustCompile(`msg="pprof listening".* addr=(\S+)`)
)
