package jsonschema_test

import (
	"bytes"
	"encoding/json"
	"io/fs"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/laas-bridge/laas-bridge/schema"
	files "github.com/laas-bridge/laas-bridge/schema/jsonschema"
)

// compile compiles every schema file, with format assertions on.
func compile(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	names, err := fs.Glob(files.Files, "*.json")
	if err != nil || len(names) == 0 {
		t.Fatalf("no schema files: %v", err)
	}
	for _, name := range names {
		doc := readJSON(t, name)
		if id := doc.(map[string]any)["$id"]; id != files.BaseURL+name {
			t.Errorf("%s: $id %v, want %s", name, id, files.BaseURL+name)
		}
		if err := c.AddResource(files.BaseURL+name, doc); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
	out := map[string]*jsonschema.Schema{}
	for _, name := range names {
		s, err := c.Compile(files.BaseURL + name)
		if err != nil {
			t.Fatalf("compile %s: %v", name, err)
		}
		out[name] = s
	}
	return out
}

func readJSON(t *testing.T, name string) any {
	t.Helper()
	data, err := files.Files.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return doc
}

func instance(t *testing.T, v any) any {
	t.Helper()
	data, ok := v.(string)
	if !ok {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		data = string(b)
	}
	inst, err := jsonschema.UnmarshalJSON(strings.NewReader(data))
	if err != nil {
		t.Fatalf("%s: %v", data, err)
	}
	return inst
}

// TestGoValuesMatchSchemas: what the Go types marshal to is valid, and
// what the contract refuses is not.
func TestGoValuesMatchSchemas(t *testing.T) {
	schemas := compile(t)
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	req := json.RawMessage(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	cc := &schema.ChatCompletion{ID: "chatcmpl-j1", Object: "chat.completion", Created: 1, Model: "m",
		Choices: []schema.Choice{{Message: schema.AssistantMessage{Role: "assistant", Content: "hello"}, FinishReason: "stop"}}}
	tooMany := &schema.Error{Status: 429, Type: schema.TypeRateLimit, Code: schema.CodeQueueFull, Message: "full", RetryAfter: 1}
	valid := []struct {
		name, file string
		value      any
	}{
		{"envelope inline", "envelope.json", schema.Envelope{ID: "r1", Model: "m", EnqueuedAt: at, Deadline: at.Add(time.Minute), Request: req}},
		{"envelope by reference", "envelope.json", schema.Envelope{ID: "r1", Model: "m", EnqueuedAt: at, RequestRef: "r1", IdempotencyKey: "abc"}},
		{"job envelope", "envelope.json", schema.Envelope{ID: "j1", Model: "m", EnqueuedAt: at, Request: req, Job: true, ResultsSubject: "laas.results.app.j1"}},
		{"minimal producer envelope", "envelope.json", `{"id":"j1","model":"m","job":true,"request":{"model":"m","messages":[{"role":"user","content":"hi"}]}}`},
		{"succeeded", "job-result.json", schema.JobResultOf(schema.Reply{ID: "j1", Status: 200, Completion: cc, Attempts: 1}, "m", at)},
		{"succeeded, large", "job-result.json", schema.JobResult{ID: "j1", Status: schema.JobSucceeded, StatusCode: 200, CompletionRef: "j1.result", FinishedAt: at}},
		{"failed", "job-result.json", schema.JobResultOf(schema.ErrorReply("j1", tooMany), "m", at)},
		{"cancelled", "job-result.json", schema.JobResultOf(schema.ErrorReply("j1", schema.JobCancelledError()), "m", at)},
		{"error body", "error.json", tooMany.Body()},
		{"error body without code", "error.json", (&schema.Error{Status: 500, Type: schema.TypeServer, Message: "internal error"}).Body()},
		{"job state", "job-state.json", schema.JobState{ID: "j1", Status: schema.JobRunning, Model: "m", ResultsSubject: "laas.results.j1", CreatedAt: at, UpdatedAt: at, Attempts: 2, Seq: 7}},
	}
	for _, tc := range valid {
		t.Run(tc.name, func(t *testing.T) {
			if err := schemas[tc.file].Validate(instance(t, tc.value)); err != nil {
				t.Errorf("%s refuses a Go value: %v", tc.file, err)
			}
		})
	}
	invalid := []struct{ name, file, json string }{
		{"results subject elsewhere", "envelope.json", `{"id":"j1","model":"m","job":true,"results_subject":"laas.requests.interactive","request":{"model":"m","messages":[{"role":"user","content":"x"}]}}`},
		{"results subject wildcard", "envelope.json", `{"id":"j1","model":"m","job":true,"results_subject":"laas.results.>","request":{"model":"m","messages":[{"role":"user","content":"x"}]}}`},
		{"id with a dot", "envelope.json", `{"id":"a.b","model":"m","request":{"model":"m","messages":[{"role":"user","content":"x"}]}}`},
		{"no request", "envelope.json", `{"id":"j1","model":"m"}`},
		{"request and reference", "envelope.json", `{"id":"j1","model":"m","request_ref":"j1","request":{"model":"m","messages":[{"role":"user","content":"x"}]}}`},
		{"misspelt field", "envelope.json", `{"id":"j1","model":"m","results_subjct":"laas.results.j1","request":{"model":"m","messages":[{"role":"user","content":"x"}]}}`},
		{"bad time", "envelope.json", `{"id":"j1","model":"m","deadline":"tomorrow","request":{"model":"m","messages":[{"role":"user","content":"x"}]}}`},
		{"failed without error", "job-result.json", `{"id":"j1","status":"failed","model":"m","status_code":500,"attempts":1,"queue_ms":0,"upstream_ms":0,"finished_at":"2026-01-02T03:04:05Z"}`},
		{"succeeded without completion", "job-result.json", `{"id":"j1","status":"succeeded","model":"m","status_code":200,"attempts":1,"queue_ms":0,"upstream_ms":0,"finished_at":"2026-01-02T03:04:05Z"}`},
		{"unknown status", "job-result.json", `{"id":"j1","status":"done","model":"m","status_code":200,"attempts":1,"queue_ms":0,"upstream_ms":0,"finished_at":"2026-01-02T03:04:05Z"}`},
		{"error without code key", "error.json", `{"error":{"message":"m","type":"t","param":null}}`},
		{"unknown state", "job-state.json", `{"id":"j1","status":"paused","model":"m","results_subject":"laas.results.j1","created_at":"2026-01-02T03:04:05Z","updated_at":"2026-01-02T03:04:05Z"}`},
	}
	for _, tc := range invalid {
		t.Run(tc.name, func(t *testing.T) {
			if err := schemas[tc.file].Validate(instance(t, tc.json)); err == nil {
				t.Errorf("%s accepts %s", tc.file, tc.json)
			}
		})
	}
}

// TestSchemasMatchGoTypes: each schema's properties are exactly the JSON
// names of its Go type's fields, so a field added to one and not the other
// fails here.
func TestSchemasMatchGoTypes(t *testing.T) {
	for _, tc := range []struct {
		file string
		path []string // to the object schema inside the file
		typ  reflect.Type
	}{
		{"envelope.json", nil, reflect.TypeFor[schema.Envelope]()},
		{"job-result.json", nil, reflect.TypeFor[schema.JobResult]()},
		{"job-state.json", nil, reflect.TypeFor[schema.JobState]()},
		{"error.json", nil, reflect.TypeFor[schema.ErrorBody]()},
		{"error.json", []string{"$defs", "detail"}, reflect.TypeFor[schema.ErrorDetail]()},
	} {
		t.Run(tc.file+"/"+tc.typ.Name(), func(t *testing.T) {
			obj := readJSON(t, tc.file).(map[string]any)
			for _, k := range tc.path {
				obj = obj[k].(map[string]any)
			}
			var inSchema []string
			for k := range obj["properties"].(map[string]any) {
				inSchema = append(inSchema, k)
			}
			var required []string
			for _, r := range asSlice(obj["required"]) {
				required = append(required, r.(string))
			}
			inGo := jsonNames(tc.typ)
			slices.Sort(inSchema)
			if !slices.Equal(inSchema, inGo) {
				t.Errorf("schema properties %v\n     Go json names %v", inSchema, inGo)
			}
			for _, r := range required {
				if !slices.Contains(inGo, r) {
					t.Errorf("required %q is not a field of %s", r, tc.typ)
				}
			}
			if obj["additionalProperties"] != false {
				t.Error("additionalProperties is not false: a misspelt field would pass")
			}
		})
	}
}

func asSlice(v any) []any {
	s, _ := v.([]any)
	return s
}

// jsonNames lists the JSON names encoding/json gives t's fields.
func jsonNames(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		if !f.IsExported() {
			continue
		}
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if name == "" {
			name = f.Name
		}
		names = append(names, name)
	}
	slices.Sort(names)
	return names
}
