package schema_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

func TestNewCatalogErrors(t *testing.T) {
	tests := []struct {
		name   string
		models []schema.Model
		want   string
	}{
		{"empty alias first", []schema.Model{{LaaSModel: "gpt-4o"}}, "model 0 has no alias"},
		{"empty alias later", []schema.Model{{Alias: "a"}, {Alias: "b"}, {PresetHash: "h"}}, "model 2 has no alias"},
		{"duplicate alias", []schema.Model{{Alias: "a"}, {Alias: "b"}, {Alias: "a", PresetHash: "h"}}, `model alias "a" is listed twice`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := schema.NewCatalog(tc.models)
			if c != nil {
				t.Errorf("catalog = %v, want nil", c)
			}
			if err == nil || err.Error() != tc.want {
				t.Errorf("error = %v, want %q", err, tc.want)
			}
		})
	}
}

func testModels() []schema.Model {
	return []schema.Model{
		{Alias: "gpt-4o", LaaSModel: "gpt-4o", PresetHash: "h-own", ServiceType: "OPENAI", Timeout: 30 * time.Second, RPM: 60},
		{Alias: "claude", LaaSModel: "claude-3-5-sonnet", ServiceType: "ANTHROPIC"},
		{Alias: "mini", LaaSModel: "gpt-4o-mini"},
	}
}

func newCatalog(t *testing.T, models []schema.Model) *schema.Catalog {
	t.Helper()
	c, err := schema.NewCatalog(models)
	if err != nil {
		t.Fatalf("NewCatalog: %v", err)
	}
	return c
}

func TestCatalogLookup(t *testing.T) {
	c := newCatalog(t, testModels())
	tests := []struct {
		alias  string
		want   schema.Model
		wantOK bool
	}{
		{"gpt-4o", testModels()[0], true},
		{"claude", testModels()[1], true},
		{"mini", testModels()[2], true},
		{"GPT-4O", schema.Model{}, false},
		{"", schema.Model{}, false},
		{"laas/gpt-4o", schema.Model{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.alias, func(t *testing.T) {
			got, ok := c.Lookup(tc.alias)
			if ok != tc.wantOK || got != tc.want {
				t.Errorf("Lookup(%q) = %+v, %t; want %+v, %t", tc.alias, got, ok, tc.want, tc.wantOK)
			}
		})
	}
}

func TestCatalogModelsIsACopy(t *testing.T) {
	in := testModels()
	c := newCatalog(t, in)

	// The catalogue does not alias the caller's slice.
	in[0].PresetHash = "changed by caller"
	if m, _ := c.Lookup("gpt-4o"); m.PresetHash != "h-own" {
		t.Errorf("after mutating the input, PresetHash = %q, want %q", m.PresetHash, "h-own")
	}

	got := c.Models()
	if !reflect.DeepEqual(got, testModels()) {
		t.Fatalf("Models() = %+v, want %+v in configuration order", got, testModels())
	}
	got[0].PresetHash = "mutated"
	got[1] = schema.Model{Alias: "evil"}
	_ = append(got[:1], schema.Model{Alias: "appended"})
	if again := c.Models(); !reflect.DeepEqual(again, testModels()) {
		t.Errorf("after mutating the result, Models() = %+v, want %+v", again, testModels())
	}
	if m, _ := c.Lookup("gpt-4o"); m.PresetHash != "h-own" {
		t.Errorf("after mutating the result, Lookup PresetHash = %q, want %q", m.PresetHash, "h-own")
	}
	if _, ok := c.Lookup("evil"); ok {
		t.Error(`Lookup("evil") found a model added through Models()`)
	}
}

func TestCatalogWithDefaultPreset(t *testing.T) {
	c := newCatalog(t, testModels())
	d := c.WithDefaultPreset("h-default")

	want := testModels()
	want[1].PresetHash = "h-default"
	want[2].PresetHash = "h-default"
	if got := d.Models(); !reflect.DeepEqual(got, want) {
		t.Errorf("WithDefaultPreset Models() = %+v, want %+v", got, want)
	}
	if got := c.Models(); !reflect.DeepEqual(got, testModels()) {
		t.Errorf("original after WithDefaultPreset = %+v, want unchanged %+v", got, testModels())
	}
	if m, ok := d.Lookup("claude"); !ok || m.PresetHash != "h-default" {
		t.Errorf(`Lookup("claude") = %+v, %t; want the default preset`, m, ok)
	}
	if m, ok := d.Lookup("gpt-4o"); !ok || m.PresetHash != "h-own" {
		t.Errorf(`Lookup("gpt-4o") = %+v, %t; want its own preset`, m, ok)
	}
}

func TestCatalogMissingPresets(t *testing.T) {
	tests := []struct {
		name string
		cat  func(t *testing.T) *schema.Catalog
		want []string
	}{
		{"some missing", func(t *testing.T) *schema.Catalog { return newCatalog(t, testModels()) }, []string{"claude", "mini"}},
		{"none after default", func(t *testing.T) *schema.Catalog { return newCatalog(t, testModels()).WithDefaultPreset("h") }, nil},
		{"empty default fills nothing", func(t *testing.T) *schema.Catalog { return newCatalog(t, testModels()).WithDefaultPreset("") }, []string{"claude", "mini"}},
		{"empty catalogue", func(t *testing.T) *schema.Catalog { return newCatalog(t, nil) }, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.cat(t).MissingPresets(); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("MissingPresets() = %#v, want %#v", got, tc.want)
			}
		})
	}
}

func TestModelDeadline(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		want    time.Duration
	}{
		{"zero means the default", 0, 600 * time.Second},
		{"negative means the default", -time.Second, 600 * time.Second},
		{"own timeout", 45 * time.Second, 45 * time.Second},
		{"one nanosecond", 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := (schema.Model{Alias: "m", Timeout: tc.timeout}).Deadline(); got != tc.want {
				t.Errorf("Deadline() = %s, want %s", got, tc.want)
			}
		})
	}
	if schema.DefaultTimeout != 600*time.Second {
		t.Errorf("DefaultTimeout = %s, want 10m0s", schema.DefaultTimeout)
	}
}
