package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

const master = "sk-master-of-the-keys-tests"

// keysFixture is a gateway with the master key and a keys.Store, logging
// into logs.
type keysFixture struct {
	*fixture
	store *keys.Store
	logs  *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for the gateway's goroutines.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newKeysFixture(t *testing.T, usage KeyUsage) *keysFixture {
	t.Helper()
	q := queuetest.Start(t, queue.Config{Memory: true})
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	store, err := keys.Open(ctx, q.JS, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(store.Close)
	gw, err := New(Config{MasterKey: master, Keys: store, Usage: usage}, q.Conn, q.JS, testCatalog(t), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	return &keysFixture{fixture: &fixture{q: q, gw: gw, srv: srv}, store: store, logs: logs}
}

// call sends a request with bearer as the key and decodes the JSON answer.
func (f *keysFixture) call(t *testing.T, bearer, method, path, body string, header ...string) (int, map[string]any) {
	t.Helper()
	resp, b := f.do(t, method, path, body, append([]string{"Authorization", "Bearer " + bearer}, header...)...)
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: %d %q is not a JSON object", method, path, resp.StatusCode, b)
	}
	return resp.StatusCode, out
}

// generate makes a key with the master key and returns its secret and token.
func (f *keysFixture) generate(t *testing.T, body string) (secret, token string) {
	t.Helper()
	status, out := f.call(t, master, "POST", "/key/generate", body)
	if status != 200 {
		t.Fatalf("generate %s: %d %v", body, status, out)
	}
	return out["key"].(string), out["token"].(string)
}

// errorOf returns an OpenAI error body's status, code and param.
func errorOf(out map[string]any) (code, param string) {
	e, _ := out["error"].(map[string]any)
	code, _ = e["code"].(string)
	param, _ = e["param"].(string)
	return code, param
}

// TestKeyLifecycle: generate (the secret once, LiteLLM's fields), info by
// secret and by token, update, block and unblock, list, delete; answers
// name a key by its token, never its secret.
func TestKeyLifecycle(t *testing.T) {
	f := newKeysFixture(t, nil)
	status, gen := f.call(t, master, "POST", "/key/generate", `{"key_alias": "app-a", "models": ["claude-3.5-sonnet"], "rpm_limit": 60,
		"tpm_limit": 1000, "max_parallel_requests": 2, "max_budget": 5.5, "budget_duration": "30d", "duration": "1h",
		"metadata": {"app": "a"}, "team_id": "t1", "user_id": "u1"}`)
	secret, _ := gen["key"].(string)
	token, _ := gen["token"].(string)
	if status != 200 || !strings.HasPrefix(secret, "sk-") || token != keys.Hash(secret) || gen["key_name"] != "sk-..."+secret[len(secret)-4:] ||
		gen["key_alias"] != "app-a" || gen["rpm_limit"] != 60.0 || gen["tpm_limit"] != 1000.0 || gen["max_parallel_requests"] != 2.0 ||
		gen["max_budget"] != 5.5 || gen["budget_duration"] != "30d" || gen["expires"] == nil || gen["team_id"] != "t1" || gen["user_id"] != "u1" ||
		gen["blocked"] != false || gen["metadata"].(map[string]any)["app"] != "a" {
		t.Fatalf("generate: %d %v", status, gen)
	}
	for _, name := range []string{secret, token} {
		status, info := f.call(t, master, "GET", "/key/info?key="+name, "")
		in, _ := info["info"].(map[string]any)
		if status != 200 || info["key"] != token || in["token"] != token || in["key_alias"] != "app-a" || in["spend"] != 0.0 {
			t.Errorf("info by %.6s...: %d %v", name, status, info)
		}
	}
	status, upd := f.call(t, master, "POST", "/key/update", `{"key": "`+secret+`", "rpm_limit": null, "tpm_limit": 5, "models": ["team/fast"]}`)
	if status != 200 || upd["key"] != token || upd["rpm_limit"] != nil || upd["tpm_limit"] != 5.0 || upd["key_alias"] != "app-a" {
		t.Errorf("update: %d %v", status, upd)
	}
	if status, out := f.call(t, master, "POST", "/key/block", `{"key": "`+token+`"}`); status != 200 || out["blocked"] != true {
		t.Errorf("block: %d %v", status, out)
	}
	if status, out := f.call(t, master, "POST", "/key/unblock", `{"key": "`+token+`"}`); status != 200 || out["blocked"] != false {
		t.Errorf("unblock: %d %v", status, out)
	}
	_, other := f.generate(t, `{"key_alias": "app-b", "team_id": "t2"}`)
	status, list := f.call(t, master, "GET", "/key/list", "")
	if ks, _ := list["keys"].([]any); status != 200 || len(ks) != 2 || ks[0] != token || ks[1] != other || list["total_count"] != 2.0 ||
		list["current_page"] != 1.0 || list["total_pages"] != 1.0 {
		t.Errorf("list: %d %v", status, list)
	}
	status, list = f.call(t, master, "GET", "/key/list?team_id=t2&return_full_object=true&size=1", "")
	if ks, _ := list["keys"].([]any); status != 200 || len(ks) != 1 || ks[0].(map[string]any)["key_alias"] != "app-b" || list["total_count"] != 1.0 {
		t.Errorf("list by team, whole keys: %d %v", status, list)
	}
	status, del := f.call(t, master, "POST", "/key/delete", `{"keys": ["`+secret+`", "`+other+`"]}`)
	if dk, _ := del["deleted_keys"].([]any); status != 200 || len(dk) != 2 || dk[0] != token || dk[1] != other {
		t.Errorf("delete: %d %v", status, del)
	}
	if status, out := f.call(t, master, "GET", "/key/info?key="+token, ""); status != 404 {
		t.Errorf("info after delete: %d %v", status, out)
	}
	for _, line := range []string{secret, secret[3:]} {
		if strings.Contains(f.logs.String(), line) {
			t.Errorf("the logs hold the secret")
		}
	}
}

// TestKeyEndpointErrors: malformed key requests are 400s naming the field;
// an unknown key is 404; a missing key in a delete is 404 and deletes none.
func TestKeyEndpointErrors(t *testing.T) {
	f := newKeysFixture(t, nil)
	secret, token := f.generate(t, `{}`)
	unknown := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name, method, path, body string
		status                   int
		code, param              string
	}{
		{"negative rpm", "POST", "/key/generate", `{"rpm_limit": -1}`, 400, schema.CodeInvalidValue, "rpm_limit"},
		{"bad duration", "POST", "/key/generate", `{"duration": "forever"}`, 400, schema.CodeInvalidValue, "duration"},
		{"bad budget_duration", "POST", "/key/generate", `{"budget_duration": "1 month"}`, 400, schema.CodeInvalidValue, "budget_duration"},
		{"models not strings", "POST", "/key/generate", `{"models": [true]}`, 400, schema.CodeInvalidValue, "models"},
		{"a model not in the catalogue", "POST", "/key/generate", `{"models": ["claude-3.5-sonnet", "gpt-4"]}`, 400, schema.CodeModelNotFound, "models[1]"},
		{"unknown field", "POST", "/key/generate", `{"guardrails": ["x"]}`, 400, schema.CodeUnsupported, "guardrails"},
		{"not JSON", "POST", "/key/generate", `{`, 400, schema.CodeInvalidJSON, ""},
		{"chosen key malformed", "POST", "/key/generate", `{"key": "sk-short"}`, 400, schema.CodeInvalidValue, "key"},
		{"chosen key the master key", "POST", "/key/generate", `{"key": "` + master + `"}`, 400, schema.CodeInvalidValue, "key"},
		{"update without key", "POST", "/key/update", `{"rpm_limit": 1}`, 400, schema.CodeInvalidValue, "key"},
		{"update naming neither key nor token", "POST", "/key/update", `{"key": "app-a"}`, 400, schema.CodeInvalidValue, "key"},
		{"update of an unknown key", "POST", "/key/update", `{"key": "` + unknown + `", "rpm_limit": 1}`, 404, keys.CodeKeyNotFound, "key"},
		{"update with a bad value", "POST", "/key/update", `{"key": "` + token + `", "tpm_limit": -2}`, 400, schema.CodeInvalidValue, "tpm_limit"},
		{"info of an unknown key", "GET", "/key/info?key=sk-not-a-key-of-this-bridge", "", 404, keys.CodeKeyNotFound, "key"},
		{"info without key", "GET", "/key/info", "", 400, schema.CodeInvalidValue, "key"},
		{"info naming neither", "GET", "/key/info?key=xyz", "", 400, schema.CodeInvalidValue, "key"},
		{"delete of a missing key", "POST", "/key/delete", `{"keys": ["` + secret + `", "` + unknown + `"]}`, 404, keys.CodeKeyNotFound, "keys"},
		{"delete of nothing", "POST", "/key/delete", `{"keys": []}`, 400, schema.CodeInvalidValue, "keys"},
		{"delete naming neither", "POST", "/key/delete", `{"keys": ["` + token + `", "nope"]}`, 400, schema.CodeInvalidValue, "keys[1]"},
		{"delete with an unknown field", "POST", "/key/delete", `{"key_aliases": ["a"]}`, 400, schema.CodeInvalidJSON, ""},
		{"block of an unknown key", "POST", "/key/block", `{"key": "` + unknown + `"}`, 404, keys.CodeKeyNotFound, "key"},
		{"list page 0", "GET", "/key/list?page=0", "", 400, schema.CodeInvalidValue, "page"},
		{"list size over 100", "GET", "/key/list?size=101", "", 400, schema.CodeInvalidValue, "size"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, out := f.call(t, master, tc.method, tc.path, tc.body)
			if code, param := errorOf(out); status != tc.status || code != tc.code || param != tc.param {
				t.Errorf("%d %s %q; want %d %s %q (%v)", status, code, param, tc.status, tc.code, tc.param, out)
			}
		})
	}
	if _, ok := f.store.Lookup(secret); !ok {
		t.Error("a delete naming a missing key deleted the others")
	}
}

// TestVirtualKeyAuth: a virtual key authenticates; blocked, expired and
// deleted keys get 401s (the unknown-key message does not ask for the
// master key); a virtual key may not manage keys (401 admin_only) and may
// read only its own info (403 for another's); /v1/models shows a key its
// models only.
func TestVirtualKeyAuth(t *testing.T) {
	f := newKeysFixture(t, nil)
	a, tokenA := f.generate(t, `{"models": ["team/fast"]}`)
	b, tokenB := f.generate(t, `{}`)
	status, list := f.call(t, a, "GET", "/v1/models", "")
	if data, _ := list["data"].([]any); status != 200 || len(data) != 1 || data[0].(map[string]any)["id"] != "team/fast" {
		t.Errorf("models for a key with one: %d %v", status, list)
	}
	if status, _ := f.call(t, a, "GET", "/v1/models/claude-3.5-sonnet", ""); status != 404 {
		t.Errorf("a model the key may not call: %d; want 404", status)
	}
	if status, list := f.call(t, b, "GET", "/v1/models", ""); len(list["data"].([]any)) != 2 || status != 200 {
		t.Errorf("models for a key with every model: %d %v", status, list)
	}
	for _, path := range []string{"/key/generate", "/key/update", "/key/delete", "/key/block", "/key/unblock"} {
		if status, out := f.call(t, a, "POST", path, `{}`); status != 401 || out["error"].(map[string]any)["code"] != keys.CodeAdminOnly {
			t.Errorf("%s with a virtual key: %d %v; want 401 admin_only", path, status, out)
		}
	}
	if status, out := f.call(t, a, "GET", "/key/list", ""); status != 401 {
		t.Errorf("/key/list with a virtual key: %d %v", status, out)
	}
	for _, q := range []string{"", "?key=" + a, "?key=" + tokenA} {
		if status, out := f.call(t, a, "GET", "/key/info"+q, ""); status != 200 || out["key"] != tokenA {
			t.Errorf("own info%s: %d %v", q, status, out)
		}
	}
	for _, q := range []string{"?key=" + tokenB, "?key=" + b, "?key=" + strings.Repeat("0", 64)} {
		if status, out := f.call(t, a, "GET", "/key/info"+q, ""); status != 403 || out["error"].(map[string]any)["code"] != keys.CodeKeyAccessDenied {
			t.Errorf("another key's info: %d %v; want 403", status, out)
		}
	}
	status, out := f.call(t, "sk-unknown-key-0000000000", "GET", "/v1/models", "")
	if msg, _ := out["error"].(map[string]any)["message"].(string); status != 401 || strings.Contains(msg, "master") || !strings.Contains(msg, "Incorrect API key") {
		t.Errorf("unknown key: %d %v", status, out)
	}
	if status, out := f.call(t, tokenA, "GET", "/v1/models", ""); status != 401 {
		t.Errorf("a key's token as the Bearer: %d %v; want 401", status, out)
	}
	ctx := context.Background()
	if _, err := f.store.Update(ctx, tokenA, keys.Params{Blocked: keys.Of(true)}); err != nil {
		t.Fatal(err)
	}
	if status, out := f.call(t, a, "GET", "/v1/models", ""); status != 401 || out["error"].(map[string]any)["code"] != keys.CodeBlocked {
		t.Errorf("blocked key: %d %v", status, out)
	}
	expired := time.Now().Add(-time.Minute)
	if _, err := f.store.Update(ctx, tokenA, keys.Params{Blocked: keys.Of(false), Duration: keys.Field[string]{Set: true}}); err != nil {
		t.Fatal(err)
	}
	setExpiry(t, f, tokenA, expired)
	status, out = f.call(t, a, "POST", "/v1/chat/completions", chatBody("team/fast", "hi"), HeaderRequestTimeout, "2")
	if status != 401 || out["error"].(map[string]any)["code"] != keys.CodeExpired || !strings.Contains(out["error"].(map[string]any)["message"].(string), "Expired Key") {
		t.Errorf("expired key: %d %v", status, out)
	}
	if _, err := f.store.Delete(ctx, []string{tokenB}); err != nil {
		t.Fatal(err)
	}
	if status, out := f.call(t, b, "GET", "/v1/models", ""); status != 401 || out["error"].(map[string]any)["code"] != schema.CodeInvalidAPIKey {
		t.Errorf("deleted key: %d %v", status, out)
	}
}

// setExpiry writes a key's expiry straight into the bucket (the API sets
// it only from now on) and waits until the store's watch has it.
func setExpiry(t *testing.T, f *keysFixture, token string, at time.Time) {
	t.Helper()
	ctx := context.Background()
	k, err := f.store.Get(ctx, token)
	if err != nil {
		t.Fatal(err)
	}
	k.Expires = &at
	data, _ := json.Marshal(k)
	kv, err := f.q.JS.KeyValue(ctx, schema.BucketKeys)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, token, data); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for k, _ := f.store.ByToken(token); k.Expires == nil; k, _ = f.store.ByToken(token) {
		if time.Now().After(deadline) {
			t.Fatal("the store never saw the expiry")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestKeyModelAccessDenied: a key calling a model outside its list gets
// 401 key_model_access_denied at every door: chat, jobs and the NATS
// endpoint (with the key in an Authorization header); the same key may
// call its own model.
func TestKeyModelAccessDenied(t *testing.T) {
	f := newKeysFixture(t, nil)
	nc := f.q.Connect(t)
	startServe(t, f.gw)
	waitForService(t, nc, 1)
	a, _ := f.generate(t, `{"models": ["team/fast"]}`)
	for _, path := range []string{"/v1/chat/completions", "/v1/queue/jobs"} {
		// A short timeout: no worker runs, so a request let through fails late.
		status, out := f.call(t, a, "POST", path, chatBody("claude-3.5-sonnet", "hi"), HeaderRequestTimeout, "2")
		if code, param := errorOf(out); status != 401 || code != keys.CodeModelAccessDenied || param != "model" {
			t.Errorf("%s: %d %v; want 401 key_model_access_denied", path, status, out)
		}
	}
	rep := ask(t, nc, chatBody("claude-3.5-sonnet", "hi"), "Authorization", "Bearer "+a, HeaderRequestTimeout, "2")
	var body schema.ErrorBody
	_ = json.Unmarshal(rep.Data, &body)
	if rep.Header.Get(micro.ErrorCodeHeader) != "401" || body.Error.Code == nil || *body.Error.Code != keys.CodeModelAccessDenied {
		t.Errorf("NATS: %s %s", rep.Header.Get(micro.ErrorCodeHeader), rep.Data)
	}
	if status, out := f.call(t, a, "POST", "/v1/queue/jobs", chatBody("team/fast", "hi")); status != 202 {
		t.Errorf("the key's own model as a job: %d %v", status, out)
	}
	rep = ask(t, nc, chatBody("claude-3.5-sonnet", "hi"), "Authorization", "Bearer sk-unknown-key-0000000000", HeaderRequestTimeout, "2")
	if rep.Header.Get(micro.ErrorCodeHeader) != "401" {
		t.Errorf("NATS with an unknown key: %s %s", rep.Header.Get(micro.ErrorCodeHeader), rep.Data)
	}
}

// fakeUsage is a KeyUsage with fixed figures.
type fakeUsage map[string]keys.Usage

func (u fakeUsage) Usage(_ context.Context, token string) (keys.Usage, error) { return u[token], nil }

// TestKeyInfoUsage: /key/info shows the usage store's figures for the
// key's budget window.
func TestKeyInfoUsage(t *testing.T) {
	usage := fakeUsage{}
	f := newKeysFixture(t, usage)
	secret, token := f.generate(t, `{"max_budget": 10, "budget_duration": "1d"}`)
	start := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	reset := start.Add(24 * time.Hour)
	usage[token] = keys.Usage{Spend: 1.25, InputTokens: 100, OutputTokens: 20, Requests: 3, WindowStart: start, BudgetResetAt: &reset}
	status, out := f.call(t, secret, "GET", "/key/info", "")
	in, _ := out["info"].(map[string]any)
	u, _ := in["usage"].(map[string]any)
	if status != 200 || in["spend"] != 1.25 || in["budget_reset_at"] != "2026-12-06T00:00:00Z" || in["max_budget"] != 10.0 ||
		u["input_tokens"] != 100.0 || u["output_tokens"] != 20.0 || u["total_tokens"] != 120.0 || u["requests"] != 3.0 || u["window_start"] != "2026-12-05T00:00:00Z" {
		t.Errorf("info: %d %v", status, out)
	}
}

// TestKeysNeverLogged: a run of generate, info, update, auth failures
// (unknown, blocked), a refused model and delete, with every log level on,
// logs neither a virtual key nor the master key.
func TestKeysNeverLogged(t *testing.T) {
	f := newKeysFixture(t, nil)
	secret, _ := f.generate(t, `{"key_alias": "app", "models": ["team/fast"]}`)
	f.call(t, master, "GET", "/key/info?key="+secret, "")
	f.call(t, secret, "GET", "/key/info", "")
	f.call(t, master, "POST", "/key/update", `{"key": "`+secret+`", "rpm_limit": -1}`)
	f.call(t, secret, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "hi"))
	f.call(t, secret+"x", "GET", "/v1/models", "")
	f.call(t, master, "POST", "/key/block", `{"key": "`+secret+`"}`)
	f.call(t, secret, "GET", "/v1/models", "")
	if status, out := f.call(t, master, "POST", "/key/delete", `{"keys": ["`+secret+`"]}`); status != 200 {
		t.Fatalf("delete: %d %v", status, out)
	}
	logs := f.logs.String()
	if !strings.Contains(logs, "virtual key deleted") {
		t.Fatalf("the run logged nothing to check: %q", logs)
	}
	for name, s := range map[string]string{"virtual key": secret[3:], "master key": master} {
		if strings.Contains(logs, s) {
			t.Errorf("the logs hold the %s:\n%s", name, logs)
		}
	}
}

// TestVirtualKeyWithoutMasterKey: on a bridge without a master key (auth
// off) any caller is the admin, but a virtual key presented still counts
// as that key: its model access applies and a blocked key is refused.
func TestVirtualKeyWithoutMasterKey(t *testing.T) {
	f := newKeysFixture(t, nil)
	secret, token := f.generate(t, `{"models": ["team/fast"]}`)
	gw, err := New(Config{Keys: f.store}, f.q.Conn, f.q.JS, testCatalog(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	open := &keysFixture{fixture: &fixture{q: f.q, gw: gw, srv: httptest.NewServer(gw.Handler())}, store: f.store}
	t.Cleanup(open.srv.Close)
	if status, out := open.call(t, "sk-anything", "GET", "/v1/models", ""); status != 200 || len(out["data"].([]any)) != 2 {
		t.Errorf("any caller: %d %v; want the admin's 2 models", status, out)
	}
	if status, out := open.call(t, secret, "GET", "/v1/models", ""); status != 200 || len(out["data"].([]any)) != 1 {
		t.Errorf("a virtual key: %d %v; want its 1 model", status, out)
	}
	if _, err := f.store.Update(context.Background(), token, keys.Params{Blocked: keys.Of(true)}); err != nil {
		t.Fatal(err)
	}
	if status, out := open.call(t, secret, "GET", "/v1/models", ""); status != 401 {
		t.Errorf("a blocked key: %d %v; want 401", status, out)
	}
}
