package schema

import (
	"fmt"
	"slices"
	"time"
)

// DefaultTimeout is a request's deadline when its model sets none.
const DefaultTimeout = 600 * time.Second

// MaxRequestTimeout bounds the timeout a request may ask for.
const MaxRequestTimeout = 24 * time.Hour

// Model is one public model alias and how to run it on LaaS.
type Model struct {
	// Alias is the name callers use (config.yaml model_name).
	Alias string
	// LaaSModel is the LaaS model name (litellm_params.model without "laas/").
	LaaSModel string
	// PresetHash is the preset to run; empty means the default preset.
	PresetHash string
	// ServiceType is passed to LaaS when set (OPENAI, ANTHROPIC, ...).
	ServiceType string
	// Timeout bounds a request end to end; zero means DefaultTimeout.
	Timeout time.Duration
	// RPM is the model's requests-per-minute limit; zero means none.
	RPM int
	// MaxParallelRequests caps the model's LaaS calls in flight at once,
	// over every worker process (config.yaml's
	// litellm_params.max_parallel_requests, LiteLLM's name); zero means
	// no cap of its own.
	MaxParallelRequests int
	// CacheTTL, when set, opts the model into the exact response cache
	// (config.yaml's litellm_params.cache.ttl): how long an answer is
	// kept, at most MaxCacheTTL. Zero: its answers are never cached.
	CacheTTL time.Duration
	// InputCostPerToken and OutputCostPerToken price a call's tokens for
	// virtual keys' spend and budgets (config.yaml's model_info, LiteLLM's
	// names); zero is free.
	InputCostPerToken, OutputCostPerToken float64
}

// Cost is what a call that used usage costs.
func (m Model) Cost(u Usage) float64 {
	return float64(u.PromptTokens)*m.InputCostPerToken + float64(u.CompletionTokens)*m.OutputCostPerToken
}

// Deadline returns the model's timeout, or DefaultTimeout.
func (m Model) Deadline() time.Duration {
	if m.Timeout > 0 {
		return m.Timeout
	}
	return DefaultTimeout
}

// Catalog is the immutable set of models a bridge serves. Safe for
// concurrent use.
type Catalog struct {
	models  []Model
	byAlias map[string]int
}

// NewCatalog builds a catalogue; aliases must be unique and non-empty.
func NewCatalog(models []Model) (*Catalog, error) {
	c := &Catalog{models: slices.Clone(models), byAlias: make(map[string]int, len(models))}
	for i, m := range models {
		if m.Alias == "" {
			return nil, fmt.Errorf("model %d has no alias", i)
		}
		if _, dup := c.byAlias[m.Alias]; dup {
			return nil, fmt.Errorf("model alias %q is listed twice", m.Alias)
		}
		c.byAlias[m.Alias] = i
	}
	return c, nil
}

// Lookup returns the model for alias.
func (c *Catalog) Lookup(alias string) (Model, bool) {
	i, ok := c.byAlias[alias]
	if !ok {
		return Model{}, false
	}
	return c.models[i], true
}

// Models returns the models in configuration order.
func (c *Catalog) Models() []Model { return slices.Clone(c.models) }

// WithDefaultPreset returns a copy in which every model without its own
// preset hash uses hash.
func (c *Catalog) WithDefaultPreset(hash string) *Catalog {
	models := c.Models()
	for i := range models {
		if models[i].PresetHash == "" {
			models[i].PresetHash = hash
		}
	}
	out, _ := NewCatalog(models) // same aliases: cannot fail
	return out
}

// MissingPresets lists the aliases that have no preset hash.
func (c *Catalog) MissingPresets() []string {
	var out []string
	for _, m := range c.models {
		if m.PresetHash == "" {
			out = append(out, m.Alias)
		}
	}
	return out
}
