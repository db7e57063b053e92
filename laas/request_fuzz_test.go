package laas

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/laas-bridge/laas-bridge/admission/multimodal"
	"github.com/laas-bridge/laas-bridge/schema"
)

// FuzzRequest drives a request body through what the bridge does with it
// before LaaS sees it: schema.DecodeChatRequest, Validate, multimodal.Check
// (the gateway) and ToLaaS (the worker). None may panic; every refusal is a
// 4xx *schema.Error whose body is OpenAI's error body; an accepted request
// translates into a LaaS body of text, image_url and document parts only.
//
// The seed corpus is testdata/fuzz/FuzzRequest. Run it with
//
//	go test -run '^$' -fuzz '^FuzzRequest$' -fuzztime 60s ./worker
func FuzzRequest(f *testing.F) {
	f.Add([]byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`))
	model := schema.Model{Alias: "m", PresetHash: "p"}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, err := schema.DecodeChatRequest(body)
		if err != nil {
			wantRefusal(t, "DecodeChatRequest", err)
			return
		}
		if err := req.Validate(); err != nil {
			wantRefusal(t, "Validate", err)
			return
		}
		if _, err := multimodal.Check(context.Background(), req); err != nil {
			wantRefusal(t, "multimodal.Check", err)
			return
		}
		out, err := ToLaaS(req, model)
		if err != nil {
			wantRefusal(t, "ToLaaS", err)
			return
		}
		wantLaaSBody(t, out)
	})
}

// wantRefusal fails unless err is a 4xx *schema.Error whose body is exactly
// {"error": {"message", "type", "param", "code"}}, with a message and a type.
func wantRefusal(t *testing.T, stage string, err error) {
	t.Helper()
	var e *schema.Error
	if !errors.As(err, &e) {
		t.Fatalf("%s: error %v (%T) is not a *schema.Error", stage, err, err)
	}
	if e.Status < 400 || e.Status > 499 {
		t.Fatalf("%s: status %d is not a 4xx: %v", stage, e.Status, e)
	}
	data, err := json.Marshal(e)
	if err != nil {
		t.Fatalf("%s: marshalling the error: %v", stage, err)
	}
	var body map[string]map[string]any
	if err := json.Unmarshal(data, &body); err != nil || len(body) != 1 || body["error"] == nil {
		t.Fatalf("%s: body %s is not {\"error\": {...}} (%v)", stage, data, err)
	}
	detail := body["error"]
	keys := make([]string, 0, len(detail))
	for k := range detail {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	if !slices.Equal(keys, []string{"code", "message", "param", "type"}) {
		t.Fatalf("%s: error body keys %q, want code, message, param, type: %s", stage, keys, data)
	}
	for _, k := range []string{"message", "type"} {
		if s, ok := detail[k].(string); !ok || s == "" {
			t.Fatalf("%s: error body %s has no %s", stage, data, k)
		}
	}
	for _, k := range []string{"param", "code"} {
		if v := detail[k]; v != nil {
			if _, ok := v.(string); !ok {
				t.Fatalf("%s: error body %s: %s is neither a string nor null", stage, data, k)
			}
		}
	}
}

// wantLaaSBody fails unless out is a LaaS request body that round-trips,
// whose messages all have parts of the three kinds LaaS reads, with media
// where Check allows it: images at https or data URLs, documents inline.
func wantLaaSBody(t *testing.T, out *schema.LaaSRequest) {
	t.Helper()
	data, err := json.Marshal(out)
	if err != nil {
		t.Fatalf("marshalling the LaaS request: %v", err)
	}
	var back schema.LaaSRequest
	if err := json.NewDecoder(bytes.NewReader(data)).Decode(&back); err != nil {
		t.Fatalf("the LaaS request does not decode: %v\n%s", err, data)
	}
	lower := func(s string, n int) string { return strings.ToLower(s[:min(len(s), n)]) }
	for i, m := range out.Messages {
		if len(m.Content) == 0 {
			t.Fatalf("messages[%d] has no parts", i)
		}
		for j, p := range m.Content {
			switch {
			case p.Type == "text":
			case p.Type == "image_url" && p.ImageURL != nil &&
				(lower(p.ImageURL.URL, 5) == "data:" || lower(p.ImageURL.URL, 8) == "https://"):
			case p.Type == "document" && p.DocumentURL != nil && lower(p.DocumentURL.URL, 5) == "data:":
			default:
				t.Fatalf("messages[%d].content[%d] = %+v: not a part LaaS can read", i, j, p)
			}
		}
	}
}
