package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/laas-bridge/laas-bridge/admission/multimodal"
	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/schema"
	"github.com/laas-bridge/laas-bridge/worker"
)

// runBaselineProxy runs `baseline-proxy`, the yardstick of `laas-bridge
// bench`: a plain HTTP proxy that translates an OpenAI chat request to LaaS
// and back with the workers' own code, with no queue in between. It is not
// listed in the usage: it exists to be measured against.
func runBaselineProxy(ctx context.Context, args []string, stderr io.Writer) error {
	env, err := readEnv()
	if err != nil {
		return err
	}
	listen := "127.0.0.1:4100"
	fs := flag.NewFlagSet("baseline-proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&listen, "listen", listen, "HTTP listen address")
	fs.StringVar(&env.Config, "config", env.Config, "LiteLLM-format model config (BRIDGE_CONFIG)")
	secretFlag(fs, &env.LaaSBaseURL, "laas-base-url", "LaaS base URL (LAAS_BASE_URL)")
	fs.StringVar(&env.LaaSPresetHash, "preset-hash", env.LaaSPresetHash, "preset for models without their own (LAAS_PRESET_HASH)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	log, err := newLogger(stderr, "warn", env.LogFormat)
	if err != nil {
		return err
	}
	cfgFile, err := loadConfig(env.Config, log)
	if err != nil {
		return err
	}
	catalog := cfgFile.Catalog.WithDefaultPreset(env.LaaSPresetHash)
	up, err := laas.NewClient(laas.Config{BaseURL: env.LaaSBaseURL, ProjectCode: env.LaaSProjectCode, APIKey: env.LaaSAPIKey}, nil)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("baseline-proxy: listen on %s: %w", listen, err)
	}
	srv := &http.Server{Handler: baselineHandler(catalog, up, log), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stderr, "baseline-proxy listening on http://%s\n", ln.Addr())
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

// baselineHandler answers POST .../chat/completions by calling LaaS at once.
func baselineHandler(catalog *schema.Catalog, up worker.Upstream, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cc, err := baselineCall(r, catalog, up)
		if err != nil {
			e := schema.AsError(err)
			if ue, ok := errors.AsType[*laas.UpstreamError](err); ok {
				e = ue.OpenAI()
			}
			if e.Status >= 500 {
				log.Warn("baseline call failed", "status", e.Status, "error", err)
			}
			writeJSON(w, e.Status, e.Body())
			return
		}
		writeJSON(w, http.StatusOK, cc)
	})
}

func baselineCall(r *http.Request, catalog *schema.Catalog, up worker.Upstream) (*schema.ChatCompletion, error) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/chat/completions") {
		return nil, &schema.Error{Status: http.StatusNotFound, Type: schema.TypeInvalidRequest, Message: "only POST /v1/chat/completions"}
	}
	body, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, 64<<20))
	if err != nil {
		return nil, schema.Invalid("", schema.CodeInvalidJSON, "could not read the body")
	}
	req, err := schema.DecodeChatRequest(body)
	if err != nil {
		return nil, err
	}
	if err := req.Validate(); err != nil {
		return nil, err
	}
	model, ok := catalog.Lookup(req.Model)
	if !ok {
		return nil, schema.ModelNotFound(req.Model)
	}
	if _, err := multimodal.Check(r.Context(), req); err != nil {
		return nil, err
	}
	laasReq, err := laas.ToLaaS(req, model)
	if err != nil {
		return nil, err
	}
	resp, err := up.Complete(r.Context(), laasReq)
	if err != nil {
		return nil, err
	}
	return laas.FromLaaS(resp, "chatcmpl-baseline", model.Alias, time.Now())
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
