package baseline

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/laas/laasmock"
	"github.com/laas-bridge/laas-bridge/schema"
)

// TestHandler: the proxy answers a chat request from the mock at once,
// and refuses what the bridge refuses with the bridge's error body.
func TestHandler(t *testing.T) {
	mock, err := laasmock.New(laasmock.Config{ProjectCode: "p", APIKey: "k"})
	if err != nil {
		t.Fatal(err)
	}
	up := httptest.NewServer(mock)
	t.Cleanup(up.Close)
	client, err := laas.NewClient(laas.Config{BaseURL: up.URL, ProjectCode: "p", APIKey: "k"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	catalog, err := schema.NewCatalog([]schema.Model{{Alias: "m", LaaSModel: "m", PresetHash: "h"}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(catalog, client, slog.New(slog.DiscardHandler)))
	t.Cleanup(srv.Close)
	const chat = `{"model":"%s","messages":[{"role":"user","content":"hi"}]}`
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		want                     string // in the body
	}{
		{"answer", http.MethodPost, "/v1/chat/completions", strings.Replace(chat, "%s", "m", 1), 200, `"chatcmpl-baseline"`},
		{"unknown model", http.MethodPost, "/v1/chat/completions", strings.Replace(chat, "%s", "x", 1), 404, `"model_not_found"`},
		{"bad JSON", http.MethodPost, "/v1/chat/completions", `{`, 400, `"error"`},
		{"other route", http.MethodGet, "/v1/models", "", 404, "only POST /v1/chat/completions"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req, err := http.NewRequestWithContext(t.Context(), tc.method, srv.URL+tc.path, strings.NewReader(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(body), tc.want) || !json.Valid(body) {
				t.Errorf("%d %s, want %d with %s", resp.StatusCode, body, tc.status, tc.want)
			}
		})
	}
}
