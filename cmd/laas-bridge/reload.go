package main

// This file holds the config reload: config.yaml's model list (models,
// presets, timeouts, rate limits, prices) is read again on SIGHUP and when
// the file's content changes (a Kubernetes ConfigMap is updated by swapping
// a symlink, so the content is compared, not the file's time). A file that
// does not parse, or that this process could not serve, is refused with its
// reason (file:line for a parse error) and the config in force stays.

import (
	"context"
	"crypto/sha256"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/laas-bridge/laas-bridge/internal/config"
	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/schema"
)

// configReloader reloads the model list of the config file at path and
// hands each accepted catalogue to apply.
type configReloader struct {
	path  string
	apply func(*schema.Catalog) error
	log   *slog.Logger
	sum   [sha256.Size]byte // of the content in force
	count *prometheus.CounterVec
}

// newConfigReloader starts from data, the content of the file in force.
func newConfigReloader(path string, data []byte, apply func(*schema.Catalog) error, reg prometheus.Registerer, log *slog.Logger) (*configReloader, error) {
	r := &configReloader{path: path, apply: apply, log: log, sum: sha256.Sum256(data),
		count: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "laas_bridge", Name: "config_reloads_total",
			Help: "Reloads of config.yaml's model list, by result: applied, or refused (the config in force stays)."}, []string{"result"})}
	if reg != nil {
		if err := reg.Register(r.count); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// reload reads the file and applies it; force applies it even when its
// content has not changed (SIGHUP). It reports whether a new config is in force.
func (r *configReloader) reload(why string, force bool) bool {
	data, err := os.ReadFile(r.path)
	if err != nil {
		r.refused(why, fmt.Errorf("read config: %w", err))
		return false
	}
	sum := sha256.Sum256(data)
	if sum == r.sum && !force {
		return false
	}
	f, err := config.Parse(r.path, data, os.LookupEnv)
	if err == nil {
		err = r.apply(f.Catalog)
	}
	if err != nil {
		r.sum = sum // refused once per content: the next change is tried again
		r.refused(why, err)
		return false
	}
	r.sum = sum
	r.count.WithLabelValues("applied").Inc()
	r.log.Info("config reloaded", "path", r.path, "trigger", why, "models", len(f.Catalog.Models()))
	return true
}

func (r *configReloader) refused(why string, err error) {
	r.count.WithLabelValues("refused").Inc()
	r.log.Error("config reload refused; the config in force stays", "path", r.path, "trigger", why,
		"error", strings.ReplaceAll(err.Error(), "\n", "; "))
}

// run reloads on each signal from hup (SIGHUP), and every poll when the
// content changed (poll 0: on SIGHUP only), until ctx is done.
func (r *configReloader) run(ctx context.Context, hup <-chan os.Signal, poll time.Duration) {
	var tick <-chan time.Time
	if poll > 0 {
		t := time.NewTicker(poll)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			r.reload("SIGHUP", true)
		case <-tick:
			r.reload("file changed", false)
		}
	}
}

// catalogFor checks that a process with a worker (hasWorker) can serve cat
// and returns it as this process serves it: every model without its own
// preset takes defaultPreset. headerTimeout is the LaaS transport's
// response header timeout, set at start from the longest model timeout: a
// reload may not ask for longer (a restart may).
func catalogFor(cat *schema.Catalog, hasWorker bool, defaultPreset string, headerTimeout time.Duration) (*schema.Catalog, error) {
	if !hasWorker {
		return cat, nil
	}
	if without := cat.MissingPresets(); defaultPreset == "" && len(without) > 0 {
		return nil, fmt.Errorf("models without preset_hash and no LAAS_PRESET_HASH: %s", strings.Join(without, ", "))
	}
	cat = cat.WithDefaultPreset(defaultPreset)
	if longest := laas.LongestTimeout(cat.Models()); longest > headerTimeout {
		return nil, fmt.Errorf("a model's timeout of %s is longer than the %s this process started with (the LaaS connections' response header timeout); restart to raise it", longest, headerTimeout)
	}
	return cat, nil
}
