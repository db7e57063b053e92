package main

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/openai/openai-go/v3"
)

// TestVirtualKeysThroughTheStack: serve opens the keys store; the master
// key generates a key for one model, which an OpenAI client can use for
// that model only, until the key is deleted; the master key keeps working.
func TestVirtualKeysThroughTheStack(t *testing.T) {
	clearEnv(t)
	t.Setenv("BRIDGE_MASTER_KEY", "sk-master-secret")
	in := startDemo(t)
	post := func(path, key, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("POST", in.url+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+key)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	status, gen := post("/key/generate", "sk-master-secret", `{"key_alias": "app-a", "models": ["claude-3.5-sonnet"]}`)
	secret, _ := gen["key"].(string)
	if status != 200 || !strings.HasPrefix(secret, "sk-") {
		t.Fatalf("generate: %d %v", status, gen)
	}
	ctx := context.Background()
	chat := func(model string) openai.ChatCompletionNewParams {
		return openai.ChatCompletionNewParams{Model: model, Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("hi")}}
	}
	if _, err := client(in, secret).Chat.Completions.New(ctx, chat("claude-3.5-sonnet")); err != nil {
		t.Errorf("the key's own model: %v", err)
	}
	_, err := client(in, secret).Chat.Completions.New(ctx, chat("own-preset"))
	wantAPIError(t, err, 401, "invalid_request_error", "key_model_access_denied", "model")
	if status, out := post("/key/delete", "sk-master-secret", `{"keys": ["`+secret+`"]}`); status != 200 {
		t.Fatalf("delete: %d %v", status, out)
	}
	_, err = client(in, secret).Chat.Completions.New(ctx, chat("claude-3.5-sonnet"))
	wantAPIError(t, err, 401, "invalid_request_error", "invalid_api_key", "")
	if _, err := client(in, "sk-master-secret").Chat.Completions.New(ctx, chat("own-preset")); err != nil {
		t.Errorf("the master key: %v", err)
	}
	if strings.Contains(in.logs.String(), secret[3:]) {
		t.Error("the virtual key appears in the log")
	}
}
