package baseline

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/laas-bridge/laas-bridge/admission/multimodal"
	"github.com/laas-bridge/laas-bridge/internal/config"
	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Config is the baseline proxy's settings.
type Config struct {
	// Listen is the HTTP listen address.
	Listen string
	// ModelConfig is the LiteLLM-format model config; "" reads config.yaml
	// in the working directory when there is one.
	ModelConfig string
	// PresetHash is the preset of models without their own.
	PresetHash string
	// LaaS is the upstream: base URL, project code and key.
	LaaS laas.Config
	// LookupEnv resolves os.environ/NAME references in the model config.
	LookupEnv func(string) (string, bool)
}

// Upstream is the LaaS call the proxy makes; *laas.Client is one.
type Upstream interface {
	Complete(ctx context.Context, req *schema.LaaSRequest) (*schema.LaaSResponse, error)
}

var _ Upstream = (*laas.Client)(nil)

// Serve loads the model config, listens, prints "baseline-proxy listening
// on http://ADDR" on stderr, and serves until ctx is done; then it shuts
// down within 5s.
func Serve(ctx context.Context, cfg Config, log *slog.Logger, stderr io.Writer) error {
	catalog, err := loadCatalog(cfg, log)
	if err != nil {
		return err
	}
	up, err := laas.NewClient(cfg.LaaS, nil)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("baseline-proxy: listen on %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{Handler: Handler(catalog, up, log), ReadHeaderTimeout: 10 * time.Second}
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

// loadCatalog loads the model config as the bridge does: without a named
// file and without config.yaml, no model is configured.
func loadCatalog(cfg Config, log *slog.Logger) (*schema.Catalog, error) {
	path := cfg.ModelConfig
	explicit := path != ""
	if !explicit {
		path = "config.yaml"
	}
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) && !explicit {
		log.Warn("no config.yaml found: no models are configured, so every chat request will answer model_not_found")
		empty, err := schema.NewCatalog(nil)
		if err != nil {
			return nil, err
		}
		return empty.WithDefaultPreset(cfg.PresetHash), nil
	}
	lookup := cfg.LookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}
	f, err := config.Load(path, lookup)
	if err != nil {
		return nil, err
	}
	return f.Catalog.WithDefaultPreset(cfg.PresetHash), nil
}

// Handler answers POST .../chat/completions by calling LaaS at once.
func Handler(catalog *schema.Catalog, up Upstream, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cc, err := call(r, catalog, up)
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

func call(r *http.Request, catalog *schema.Catalog, up Upstream) (*schema.ChatCompletion, error) {
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
