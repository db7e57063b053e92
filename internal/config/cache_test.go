package config

import (
	"testing"
	"time"
)

// TestParseCache: litellm_params.cache opts a model into the response
// cache with its ttl (seconds or a duration, whole seconds from 1s to
// 24h); a model without it has none; every mistake is an error naming its
// line.
func TestParseCache(t *testing.T) {
	const head = "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n"
	valid := []struct {
		name, yaml string
		env        map[string]string
		want       time.Duration
	}{
		{name: "no cache", yaml: "", want: 0},
		{name: "null cache", yaml: "      cache:\n", want: 0},
		{name: "duration", yaml: "      cache: {ttl: 1h}\n", want: time.Hour},
		{name: "block mapping seconds", yaml: "      cache:\n        ttl: 600\n", want: 10 * time.Minute},
		{name: "quoted seconds", yaml: "      cache: {ttl: \"90\"}\n", want: 90 * time.Second},
		{name: "the most", yaml: "      cache: {ttl: 24h}\n", want: 24 * time.Hour},
		{name: "the least", yaml: "      cache: {ttl: 1}\n", want: time.Second},
		{name: "from the environment", yaml: "      cache: {ttl: os.environ/TTL}\n", env: map[string]string{"TTL": "30m"}, want: 30 * time.Minute},
	}
	for _, tt := range valid {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("config.yaml", []byte(head+tt.yaml), envFrom(tt.env))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			m, _ := f.Catalog.Lookup("a")
			if m.CacheTTL != tt.want {
				t.Errorf("CacheTTL = %s, want %s", m.CacheTTL, tt.want)
			}
		})
	}
	invalid := []struct {
		name, yaml string
		env        map[string]string
		want       string
	}{
		{name: "not a mapping", yaml: "      cache: true\n", want: "config.yaml:5: model_list[0].litellm_params.cache must be a mapping such as {ttl: 1h}, not a boolean"},
		{name: "no ttl", yaml: "      cache: {}\n", want: "config.yaml:5: model_list[0].litellm_params.cache.ttl is missing: how long an answer is kept, such as 1h"},
		{name: "empty ttl", yaml: "      cache:\n        ttl:\n", want: "config.yaml:6: model_list[0].litellm_params.cache.ttl is empty: how long an answer is kept, such as 1h"},
		{name: "unknown key", yaml: "      cache:\n        ttl: 1h\n        namespace: x\n", want: "config.yaml:7: model_list[0].litellm_params.cache.namespace is not a cache setting; the cache has only ttl"},
		{name: "zero", yaml: "      cache: {ttl: 0}\n", want: "config.yaml:5: model_list[0].litellm_params.cache.ttl 0 must be greater than zero"},
		{name: "not a duration", yaml: "      cache: {ttl: forever}\n", want: `config.yaml:5: model_list[0].litellm_params.cache.ttl "forever" is neither a number of seconds nor a duration such as "90s"`},
		{name: "fraction of a second", yaml: "      cache: {ttl: 1.5}\n", want: "config.yaml:5: model_list[0].litellm_params.cache.ttl 1.5 must be whole seconds from 1s to 24h"},
		{name: "under a second", yaml: "      cache: {ttl: 500ms}\n", want: `config.yaml:5: model_list[0].litellm_params.cache.ttl "500ms" must be whole seconds from 1s to 24h`},
		{name: "over a day", yaml: "      cache: {ttl: 25h}\n", want: `config.yaml:5: model_list[0].litellm_params.cache.ttl "25h" must be whole seconds from 1s to 24h`},
		{name: "twice", yaml: "      cache: {ttl: 1h}\n      cache: {ttl: 2h}\n", want: "config.yaml:6: model_list[0].litellm_params.cache is set twice (first at line 5)"},
		{name: "environment not set", yaml: "      cache: {ttl: os.environ/TTL}\n", want: "config.yaml:5: model_list[0].litellm_params.cache.ttl names os.environ/TTL, which is not set"},
	}
	for _, tt := range invalid {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("config.yaml", []byte(head+tt.yaml), envFrom(tt.env))
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want error %q", f, tt.want)
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", got, tt.want)
			}
		})
	}
}
