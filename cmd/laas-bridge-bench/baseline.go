package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge-bench/internal/baseline"
	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/schema"
)

// baselineCommand runs the baseline proxy, the bench's yardstick; the
// bench starts its own executable with it.
const baselineCommand = "baseline-proxy"

// runBaseline runs `laas-bridge-bench baseline-proxy` until ctx is done. It
// reads the bridge's own variables: LAAS_PROJECT_CODE, LAAS_API_KEY,
// LAAS_PRESET_HASH, LAAS_BASE_URL, BRIDGE_CONFIG and BRIDGE_LOG_FORMAT.
func runBaseline(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stderr io.Writer) error {
	get := func(name string) string { return envDefault(lookupEnv, name, "") }
	cfg := baseline.Config{
		Listen:      "127.0.0.1:4100",
		ModelConfig: get("BRIDGE_CONFIG"),
		PresetHash:  get("LAAS_PRESET_HASH"),
		LaaS: laas.Config{
			BaseURL:     envDefault(lookupEnv, "LAAS_BASE_URL", "https://api-laas.wanted.co.kr"),
			ProjectCode: schema.Secret(get("LAAS_PROJECT_CODE")),
			APIKey:      schema.Secret(get("LAAS_API_KEY")),
		},
		LookupEnv: lookupEnv,
	}
	fs := flag.NewFlagSet(baselineCommand, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "HTTP listen address")
	fs.StringVar(&cfg.ModelConfig, "config", cfg.ModelConfig, "LiteLLM-format model config (BRIDGE_CONFIG)")
	secretFlag(fs, &cfg.LaaS.BaseURL, "laas-base-url", "LaaS base URL (LAAS_BASE_URL)")
	fs.StringVar(&cfg.PresetHash, "preset-hash", cfg.PresetHash, "preset for models without their own (LAAS_PRESET_HASH)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, envDefault(lookupEnv, "BRIDGE_LOG_FORMAT", "text"))
	if err != nil {
		return err
	}
	return baseline.Serve(ctx, cfg, log, stderr)
}

// newLogger is the proxy's logger on w, at level warn, as laas-bridge
// formats its own (BRIDGE_LOG_FORMAT).
func newLogger(w io.Writer, format string) (*slog.Logger, error) {
	opts := &slog.HandlerOptions{Level: slog.LevelWarn}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("BRIDGE_LOG_FORMAT %q: use text or json", format)
}
