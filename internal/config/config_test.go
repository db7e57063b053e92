package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

var update = flag.Bool("update", false, "rewrite testdata/*.golden from the current output")

// testEnv is the environment the golden files are loaded with.
var testEnv = map[string]string{
	"LAAS_PRESET_CLAUDE4":   "preset-claude4-from-env",
	"GPT_SERVICE_TYPE":      "openai",
	"GPT_TIMEOUT":           "45",
	"GPT_RPM":               "30",
	"GEMINI_MODEL":          "laas/gemini-2.5-pro",
	"ALLOW_PRESET_OVERRIDE": "true",
}

// envFrom returns a getenv over env.
func envFrom(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

// golden is what a testdata/*.golden file holds: the whole File, rendered.
type golden struct {
	Models              []goldenModel `json:"models"`
	AllowPresetOverride bool          `json:"allow_preset_override"`
	Ignored             []string      `json:"ignored"`
}

type goldenModel struct {
	Alias       string  `json:"alias"`
	LaaSModel   string  `json:"laas_model"`
	PresetHash  string  `json:"preset_hash"`
	ServiceType string  `json:"service_type"`
	Timeout     string  `json:"timeout"`
	RPM         int     `json:"rpm"`
	InputCost   float64 `json:"input_cost_per_token,omitempty"`
	OutputCost  float64 `json:"output_cost_per_token,omitempty"`
}

func render(t *testing.T, f *File) []byte {
	t.Helper()
	g := golden{Models: []goldenModel{}, AllowPresetOverride: f.AllowPresetOverride, Ignored: f.Ignored}
	if g.Ignored == nil {
		g.Ignored = []string{}
	}
	for _, m := range f.Catalog.Models() {
		g.Models = append(g.Models, goldenModel{
			Alias:       m.Alias,
			LaaSModel:   m.LaaSModel,
			PresetHash:  m.PresetHash,
			ServiceType: m.ServiceType,
			Timeout:     m.Timeout.String(),
			RPM:         m.RPM,
			InputCost:   m.InputCostPerToken,
			OutputCost:  m.OutputCostPerToken,
		})
	}
	out, err := json.MarshalIndent(g, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return append(out, '\n')
}

// TestLoadGolden loads every testdata/*.yaml with testEnv and compares the
// whole result with testdata/*.golden. Run with -update to rewrite them.
func TestLoadGolden(t *testing.T) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if len(inputs) == 0 {
		t.Fatal("no testdata/*.yaml inputs found")
	}
	for _, in := range inputs {
		name := strings.TrimSuffix(filepath.Base(in), ".yaml")
		t.Run(name, func(t *testing.T) {
			f, err := Load(in, envFrom(testEnv))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			got := render(t, f)
			goldenPath := strings.TrimSuffix(in, ".yaml") + ".golden"
			if *update {
				if err := os.WriteFile(goldenPath, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(goldenPath)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from %s\n--- got\n%s--- want\n%s", in, goldenPath, got, want)
			}
		})
	}
}

// TestSeedConfig checks, independently of the golden files, that the config
// users of the earlier LiteLLM handler have loads unchanged and needs no
// environment.
func TestSeedConfig(t *testing.T) {
	const seed = `model_list:
  - model_name: claude-3.5-sonnet
    litellm_params:
      model: laas/claude-3.5-sonnet

litellm_settings:
  set_verbose: True
  custom_provider_map:
    - provider: "laas"
      custom_handler: laas_proxy_server.laas_proxy
`
	onDisk, err := os.ReadFile(filepath.Join("testdata", "seed.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(onDisk) != seed {
		t.Fatal("testdata/seed.yaml is no longer the seed config")
	}
	f, err := Parse("config.yaml", []byte(seed), nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	want := []schema.Model{{Alias: "claude-3.5-sonnet", LaaSModel: "claude-3.5-sonnet"}}
	if got := f.Catalog.Models(); !slices.Equal(got, want) {
		t.Errorf("models = %+v, want %+v", got, want)
	}
	wantIgnored := []string{"litellm_settings.custom_provider_map", "litellm_settings.set_verbose"}
	if !slices.Equal(f.Ignored, wantIgnored) {
		t.Errorf("Ignored = %q, want %q", f.Ignored, wantIgnored)
	}
	if f.AllowPresetOverride {
		t.Error("AllowPresetOverride = true, want false")
	}
	if got := f.Catalog.WithDefaultPreset("default-hash").Models()[0].PresetHash; got != "default-hash" {
		t.Errorf("default preset not applicable: PresetHash = %q", got)
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  map[string]string
		want string
	}{
		{
			name: "malformed YAML keeps yaml's line",
			yaml: "model_list:\n  - model_name: a\n    litellm_params: [\n",
			want: "config.yaml:3: did not find expected node content",
		},
		{
			name: "negative price",
			yaml: "model_list:\n  - model_name: a\n    litellm_params: {model: laas/a}\n    model_info:\n      input_cost_per_token: -1\n",
			want: "config.yaml:5: model_list[0].model_info.input_cost_per_token -1 must be a number of at least 0, such as 0.000003",
		},
		{
			name: "model_info not a mapping",
			yaml: "model_list:\n  - model_name: a\n    litellm_params: {model: laas/a}\n    model_info: [1]\n",
			want: "config.yaml:4: model_list[0].model_info must be a mapping, not a sequence",
		},
		{
			name: "tab indentation",
			yaml: "model_list:\n\t- model_name: a\n",
			want: "config.yaml:2: found character that cannot start any token",
		},
		{
			name: "unknown alias",
			yaml: "model_list: *models\n",
			want: "config.yaml: unknown anchor 'models' referenced",
		},
		{
			name: "two documents",
			yaml: "model_list: []\n---\nmodel_list: []\n",
			want: "config.yaml:2: a second YAML document starts here; the file must hold one",
		},
		{
			name: "empty file",
			yaml: "",
			want: "config.yaml:1: model_list is missing: the file lists no models",
		},
		{
			name: "comments only",
			yaml: "# nothing yet\n",
			want: "config.yaml:1: model_list is missing: the file lists no models",
		},
		{
			name: "model_list missing",
			yaml: "# header\nlitellm_settings:\n  set_verbose: True\n",
			want: "config.yaml:2: model_list is missing: the file lists no models",
		},
		{
			name: "top level is a sequence",
			yaml: "- model_name: a\n",
			want: "config.yaml:1: the file must be a mapping with a model_list, not a sequence",
		},
		{
			name: "model_list is a mapping",
			yaml: "model_list:\n  model_name: a\n",
			want: "config.yaml:2: model_list must be a sequence of models, not a mapping",
		},
		{
			name: "model_list is a string",
			yaml: "model_list: laas/claude\n",
			want: "config.yaml:1: model_list must be a sequence of models, not a string",
		},
		{
			name: "model entry is a string",
			yaml: "model_list:\n  - claude-3.5-sonnet\n",
			want: "config.yaml:2: model_list[0] must be a mapping with model_name and litellm_params, not a string",
		},
		{
			name: "model_name missing",
			yaml: "model_list:\n  - litellm_params:\n      model: laas/a\n",
			want: "config.yaml:2: model_list[0].model_name is missing",
		},
		{
			name: "model_name empty",
			yaml: "model_list:\n  - model_name: \"\"\n    litellm_params:\n      model: laas/a\n",
			want: "config.yaml:2: model_list[0].model_name is empty",
		},
		{
			name: "model_name null",
			yaml: "model_list:\n  - model_name:\n    litellm_params:\n      model: laas/a\n",
			want: "config.yaml:2: model_list[0].model_name is empty",
		},
		{
			name: "model_name is a sequence",
			yaml: "model_list:\n  - model_name: [a, b]\n    litellm_params:\n      model: laas/a\n",
			want: "config.yaml:2: model_list[0].model_name must be a single value, not a sequence",
		},
		{
			name: "litellm_params missing",
			yaml: "model_list:\n  - model_name: a\n    model_info: {}\n",
			want: "config.yaml:2: model_list[0].litellm_params is missing",
		},
		{
			name: "litellm_params is a string",
			yaml: "model_list:\n  - model_name: a\n    litellm_params: laas/a\n",
			want: "config.yaml:3: model_list[0].litellm_params must be a mapping, not a string",
		},
		{
			name: "litellm_params null",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n",
			want: "config.yaml:3: model_list[0].litellm_params.model is missing",
		},
		{
			name: "model missing",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      preset_hash: p\n",
			want: "config.yaml:3: model_list[0].litellm_params.model is missing",
		},
		{
			name: "model null",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model:\n",
			want: "config.yaml:4: model_list[0].litellm_params.model is empty",
		},
		{
			name: "model of another provider",
			yaml: `model_list:
  - model_name: claude-3.5-sonnet
    litellm_params:
      model: laas/claude-3.5-sonnet
  - model_name: gpt-4
    litellm_params:
      model: openai/gpt-4
`,
			want: `config.yaml:7: model_list[1].litellm_params.model "openai/gpt-4" must start with "laas/"`,
		},
		{
			name: "model without a name",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/\n",
			want: `config.yaml:4: model_list[0].litellm_params.model "laas/" names no LaaS model after "laas/"`,
		},
		{
			name: "model is a mapping",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: {name: a}\n",
			want: "config.yaml:4: model_list[0].litellm_params.model must be a single value, not a mapping",
		},
		{
			name: "duplicate model_name",
			yaml: `model_list:
  - model_name: claude
    litellm_params:
      model: laas/claude-3.5-sonnet
  - model_name: claude
    litellm_params:
      model: laas/claude-3.7-sonnet
`,
			want: `config.yaml:5: model_list[1].model_name "claude" is already used by model_list[0] (line 2)`,
		},
		{
			name: "duplicate key the bridge reads",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      model: laas/b\n",
			want: "config.yaml:5: model_list[0].litellm_params.model is set twice (first at line 4)",
		},
		{
			name: "duplicate top-level model_list",
			yaml: "model_list: []\nmodel_list: []\n",
			want: "config.yaml:2: model_list is set twice (first at line 1)",
		},
		{
			name: "bad service_type",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      service_type: openai-compatible\n",
			want: `config.yaml:5: model_list[0].litellm_params.service_type "openai-compatible" is not one of OPENAI, AZURE, NCP, UPSTAGE, GOOGLE, AWS, ANTHROPIC`,
		},
		{
			name: "timeout zero",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      timeout: 0\n",
			want: "config.yaml:5: model_list[0].litellm_params.timeout 0 must be greater than zero",
		},
		{
			name: "timeout negative",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      timeout: -2.5\n",
			want: "config.yaml:5: model_list[0].litellm_params.timeout -2.5 must be greater than zero",
		},
		{
			name: "timeout negative duration",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      timeout: -5s\n",
			want: `config.yaml:5: model_list[0].litellm_params.timeout "-5s" must be greater than zero`,
		},
		{
			name: "timeout not a duration",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      timeout: soon\n",
			want: `config.yaml:5: model_list[0].litellm_params.timeout "soon" is neither a number of seconds nor a duration such as "90s"`,
		},
		{
			name: "timeout boolean",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      timeout: true\n",
			want: `config.yaml:5: model_list[0].litellm_params.timeout true must be a number of seconds or a duration such as "90s"`,
		},
		{
			name: "timeout infinite",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      timeout: .inf\n",
			want: "config.yaml:5: model_list[0].litellm_params.timeout .inf is too long",
		},
		{
			name: "rpm not a number",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      rpm: \"fast\"\n",
			want: `config.yaml:5: model_list[0].litellm_params.rpm "fast" must be a whole number of requests per minute`,
		},
		{
			name: "rpm fractional",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      rpm: 1.5\n",
			want: "config.yaml:5: model_list[0].litellm_params.rpm 1.5 must be a whole number of requests per minute",
		},
		{
			name: "rpm negative",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      rpm: -1\n",
			want: "config.yaml:5: model_list[0].litellm_params.rpm -1 must not be negative",
		},
		{
			name: "max_parallel_requests not a number",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      max_parallel_requests: many\n",
			want: "config.yaml:5: model_list[0].litellm_params.max_parallel_requests \"many\" must be a whole number of requests in flight",
		},
		{
			name: "max_parallel_requests negative",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      max_parallel_requests: -2\n",
			want: "config.yaml:5: model_list[0].litellm_params.max_parallel_requests -2 must not be negative",
		},
		{
			name: "rpm too large",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      rpm: 99999999999999999999\n",
			want: "config.yaml:5: model_list[0].litellm_params.rpm 99999999999999999999 is too large",
		},
		{
			name: "allow_preset_override not a boolean",
			yaml: "model_list: []\nbridge_settings:\n  allow_preset_override: maybe\n",
			want: `config.yaml:3: bridge_settings.allow_preset_override "maybe" must be true or false`,
		},
		{
			name: "bridge_settings is a sequence",
			yaml: "model_list: []\nbridge_settings:\n  - allow_preset_override\n",
			want: "config.yaml:3: bridge_settings must be a mapping, not a sequence",
		},
		{
			name: "environment variable not set",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      preset_hash: os.environ/LAAS_PRESET_A\n",
			want: "config.yaml:5: model_list[0].litellm_params.preset_hash names os.environ/LAAS_PRESET_A, which is not set",
		},
		{
			name: "environment variable not set in bridge_settings",
			yaml: "model_list: []\nbridge_settings:\n  allow_preset_override: os.environ/ALLOW\n",
			want: "config.yaml:3: bridge_settings.allow_preset_override names os.environ/ALLOW, which is not set",
		},
		{
			name: "environment reference without a name",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: os.environ/\n",
			want: `config.yaml:4: model_list[0].litellm_params.model is "os.environ/", which names no environment variable`,
		},
		{
			name: "model from the environment of another provider",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: os.environ/MODEL_A\n",
			env:  map[string]string{"MODEL_A": "openai/gpt-4"},
			want: `config.yaml:4: model_list[0].litellm_params.model from os.environ/MODEL_A must start with "laas/"`,
		},
		{
			name: "model from the environment empty",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: os.environ/MODEL_A\n",
			env:  map[string]string{"MODEL_A": ""},
			want: "config.yaml:4: model_list[0].litellm_params.model from os.environ/MODEL_A is empty",
		},
		{
			name: "rpm from the environment not a number",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      rpm: os.environ/RPM_A\n",
			env:  map[string]string{"RPM_A": "fast"},
			want: "config.yaml:5: model_list[0].litellm_params.rpm from os.environ/RPM_A must be a whole number of requests per minute",
		},
		{
			name: "merge of a scalar",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      <<: laas/a\n      model: laas/a\n",
			want: "config.yaml:4: model_list[0].litellm_params merges (<<) a string; only mappings can be merged",
		},
		{
			name: "mapping merged into itself",
			yaml: "model_list:\n  - model_name: a\n    litellm_params: &p\n      model: laas/a\n      <<: *p\n",
			want: "config.yaml:3: model_list[0].litellm_params merges (<<) a mapping into itself",
		},
		{
			name: "key that is not a name",
			yaml: "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n      ? [x, y]\n      : z\n",
			want: "config.yaml:5: model_list[0].litellm_params has a key that is a sequence; keys must be names",
		},
		{
			name: "every problem at once",
			yaml: `model_list:
  - model_name: a
    litellm_params:
      model: openai/a
      rpm: fast
  - model_name: a
    litellm_params:
      model: laas/b
      timeout: 0
  - litellm_params:
      model: laas/c
bridge_settings:
  allow_preset_override: os.environ/ALLOW
`,
			want: `config.yaml:4: model_list[0].litellm_params.model "openai/a" must start with "laas/"
config.yaml:5: model_list[0].litellm_params.rpm "fast" must be a whole number of requests per minute
config.yaml:6: model_list[1].model_name "a" is already used by model_list[0] (line 2)
config.yaml:9: model_list[1].litellm_params.timeout 0 must be greater than zero
config.yaml:10: model_list[2].model_name is missing
config.yaml:13: bridge_settings.allow_preset_override names os.environ/ALLOW, which is not set`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("config.yaml", []byte(tt.yaml), envFrom(tt.env))
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want error %q", f, tt.want)
			}
			if f != nil {
				t.Errorf("Parse returned a File with its error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("error\n got: %s\nwant: %s", got, tt.want)
			}
		})
	}
}

func TestParseValues(t *testing.T) {
	const head = "model_list:\n  - model_name: a\n    litellm_params:\n      model: laas/a\n"
	tests := []struct {
		name string
		yaml string
		env  map[string]string
		want schema.Model
	}{
		{name: "timeout integer seconds", yaml: "      timeout: 120\n", want: schema.Model{Timeout: 120 * time.Second}},
		{name: "timeout decimal seconds", yaml: "      timeout: 0.25\n", want: schema.Model{Timeout: 250 * time.Millisecond}},
		{name: "timeout duration", yaml: "      timeout: 2m30s\n", want: schema.Model{Timeout: 150 * time.Second}},
		{name: "timeout quoted seconds", yaml: "      timeout: \"90\"\n", want: schema.Model{Timeout: 90 * time.Second}},
		{name: "timeout from environment as seconds", yaml: "      timeout: os.environ/T\n", env: map[string]string{"T": "600"}, want: schema.Model{Timeout: 600 * time.Second}},
		{name: "timeout from environment as duration", yaml: "      timeout: os.environ/T\n", env: map[string]string{"T": "10m"}, want: schema.Model{Timeout: 10 * time.Minute}},
		{name: "timeout from empty environment is unset", yaml: "      timeout: os.environ/T\n", env: map[string]string{"T": ""}, want: schema.Model{}},
		{name: "rpm", yaml: "      rpm: 600\n", want: schema.Model{RPM: 600}},
		{name: "rpm quoted", yaml: "      rpm: \"42\"\n", want: schema.Model{RPM: 42}},
		{name: "rpm null", yaml: "      rpm:\n", want: schema.Model{}},
		{name: "max_parallel_requests", yaml: "      max_parallel_requests: 2\n", want: schema.Model{MaxParallelRequests: 2}},
		{name: "max_parallel_requests from environment", yaml: "      max_parallel_requests: os.environ/MPR\n", env: map[string]string{"MPR": "8"}, want: schema.Model{MaxParallelRequests: 8}},
		{name: "max_parallel_requests zero is no cap", yaml: "      max_parallel_requests: 0\n", want: schema.Model{}},
		{name: "service_type lower case", yaml: "      service_type: upstage\n", want: schema.Model{ServiceType: "UPSTAGE"}},
		{name: "service_type from environment", yaml: "      service_type: os.environ/ST\n", env: map[string]string{"ST": "Ncp"}, want: schema.Model{ServiceType: "NCP"}},
		{name: "preset_hash from environment", yaml: "      preset_hash: os.environ/P\n", env: map[string]string{"P": "hash-1"}, want: schema.Model{PresetHash: "hash-1"}},
		{name: "preset_hash numeric keeps its text", yaml: "      preset_hash: 0012e5\n", want: schema.Model{PresetHash: "0012e5"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f, err := Parse("config.yaml", []byte(head+tt.yaml), envFrom(tt.env))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := tt.want
			want.Alias, want.LaaSModel = "a", "a"
			if got := f.Catalog.Models(); !slices.Equal(got, []schema.Model{want}) {
				t.Errorf("models = %+v, want [%+v]", got, want)
			}
		})
	}
}

func TestAllowPresetOverride(t *testing.T) {
	tests := []struct {
		value string
		env   map[string]string
		want  bool
	}{
		{value: "true", want: true},
		{value: "True", want: true},
		{value: "false", want: false},
		{value: "yes", want: true},
		{value: "off", want: false},
		{value: "", want: false},
		{value: "os.environ/ALLOW", env: map[string]string{"ALLOW": "1"}, want: true},
		{value: "os.environ/ALLOW", env: map[string]string{"ALLOW": "FALSE"}, want: false},
		{value: "os.environ/ALLOW", env: map[string]string{"ALLOW": ""}, want: false},
	}
	for _, tt := range tests {
		t.Run(tt.value+"/"+tt.env["ALLOW"], func(t *testing.T) {
			data := "model_list: []\nbridge_settings:\n  allow_preset_override: " + tt.value + "\n"
			f, err := Parse("config.yaml", []byte(data), envFrom(tt.env))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if f.AllowPresetOverride != tt.want {
				t.Errorf("AllowPresetOverride = %v, want %v", f.AllowPresetOverride, tt.want)
			}
		})
	}
	f, err := Parse("config.yaml", []byte("model_list: []\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.AllowPresetOverride {
		t.Error("AllowPresetOverride defaults to true, want false")
	}
}

// TestEnvironment checks os.environ/ resolution against the real process
// environment, and that only the keys the bridge reads are looked up.
func TestEnvironment(t *testing.T) {
	const data = `model_list:
  - model_name: a
    litellm_params:
      model: laas/a
      preset_hash: os.environ/LAAS_BRIDGE_TEST_PRESET
      api_key: os.environ/LAAS_BRIDGE_TEST_IGNORED
general_settings:
  master_key: os.environ/LAAS_BRIDGE_TEST_MASTER_KEY
`
	t.Run("set", func(t *testing.T) {
		t.Setenv("LAAS_BRIDGE_TEST_PRESET", "preset-from-process-env")
		var asked []string
		getenv := func(name string) (string, bool) {
			asked = append(asked, name)
			return os.LookupEnv(name)
		}
		f, err := Parse("config.yaml", []byte(data), getenv)
		if err != nil {
			t.Fatalf("Parse: %v", err)
		}
		if got := f.Catalog.Models()[0].PresetHash; got != "preset-from-process-env" {
			t.Errorf("PresetHash = %q, want the variable's value", got)
		}
		if want := []string{"LAAS_BRIDGE_TEST_PRESET"}; !slices.Equal(asked, want) {
			t.Errorf("looked up %q, want only %q", asked, want)
		}
	})
	t.Run("unset", func(t *testing.T) {
		_, err := Parse("config.yaml", []byte(data), os.LookupEnv)
		want := "config.yaml:5: model_list[0].litellm_params.preset_hash names os.environ/LAAS_BRIDGE_TEST_PRESET, which is not set"
		if err == nil || err.Error() != want {
			t.Errorf("error = %v, want %s", err, want)
		}
	})
	t.Run("nil getenv sets nothing", func(t *testing.T) {
		t.Setenv("LAAS_BRIDGE_TEST_PRESET", "must-not-be-read")
		_, err := Parse("config.yaml", []byte(data), nil)
		if err == nil || !strings.Contains(err.Error(), "which is not set") {
			t.Errorf("error = %v, want the variable reported unset", err)
		}
	})
}

// TestErrorsHideEnvironmentValues checks that a value read from the
// environment never appears in an error, whatever is wrong with it.
func TestErrorsHideEnvironmentValues(t *testing.T) {
	const secret = "s3cr3t-value"
	env := map[string]string{
		"M":  "openai/" + secret,
		"E":  "laas/" + secret,
		"ST": secret,
		"T":  secret,
		"R":  secret,
		"A":  secret,
	}
	const data = `model_list:
  - model_name: a
    litellm_params:
      model: os.environ/M
      service_type: os.environ/ST
      timeout: os.environ/T
      rpm: os.environ/R
  - model_name: a
    litellm_params:
      model: os.environ/E
bridge_settings:
  allow_preset_override: os.environ/A
`
	_, err := Parse("config.yaml", []byte(data), envFrom(env))
	if err == nil {
		t.Fatal("Parse succeeded, want errors")
	}
	if strings.Contains(err.Error(), secret) {
		t.Errorf("error shows an environment value:\n%s", err)
	}
	if n := strings.Count(err.Error(), "\n") + 1; n != 6 {
		t.Errorf("got %d problems, want 6:\n%s", n, err)
	}
}

func TestLoad(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		_, err := Load(filepath.Join(t.TempDir(), "config.yaml"), nil)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("error = %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("errors name the path", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "config.yaml")
		if err := os.WriteFile(path, []byte("model_list: fast\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path, nil)
		want := path + ":1: model_list must be a sequence of models, not a string"
		if err == nil || err.Error() != want {
			t.Errorf("error = %v, want %s", err, want)
		}
	})
}

// FuzzParse checks that Parse never panics, returns a File or an error but
// not both, and keeps its promises about each.
func FuzzParse(f *testing.F) {
	inputs, err := filepath.Glob(filepath.Join("testdata", "*.yaml"))
	if err != nil {
		f.Fatal(err)
	}
	for _, in := range inputs {
		data, err := os.ReadFile(in)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte("model_list: &a [*a]\n"))
	f.Add([]byte("a: &a {<<: [*a, *a]}\nmodel_list: []\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Parse("fuzz.yaml", data, envFrom(testEnv))
		if (file == nil) == (err == nil) {
			t.Fatalf("Parse returned file %v and error %v", file, err)
		}
		if err != nil {
			for line := range strings.Lines(err.Error()) {
				if !strings.HasPrefix(line, "fuzz.yaml") {
					t.Errorf("error line %q does not name the file", line)
				}
			}
			return
		}
		if file.Catalog == nil {
			t.Fatal("nil Catalog without an error")
		}
		if !slices.IsSorted(file.Ignored) || len(slices.Compact(slices.Clone(file.Ignored))) != len(file.Ignored) {
			t.Errorf("Ignored not sorted and unique: %q", file.Ignored)
		}
	})
}
