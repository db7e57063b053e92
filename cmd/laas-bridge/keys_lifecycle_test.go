package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"
)

// TestKeysLifecycle is the scenario, on two gateway processes and
// one worker: the master key makes keys A (claude-3.5-sonnet only, 60 rpm)
// and B. A asking for another model is refused 401; A's 61st call within
// the minute is a 429 with Retry-After, and with X-Laas-Bridge-Queue: wait
// is answered once its slot comes; B can neither see nor act on A's file,
// batch or job (404, as for an id that does not exist), A can; once A is
// deleted on one gateway, the other refuses A's next call.
func TestKeysLifecycle(t *testing.T) {
	s := startKeyStack(t, 2, 1)
	gw0, gw1 := s.gateways[0], s.gateways[1]
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	a := generateKey(ctx, t, gw0, map[string]any{"key_alias": "app-a", "models": []string{"claude-3.5-sonnet"}, "rpm_limit": 60})
	b := generateKey(ctx, t, gw1, map[string]any{"key_alias": "app-b"})
	keyEverywhere(ctx, t, s.gateways, a)
	keyEverywhere(ctx, t, s.gateways, b)

	for _, model := range []string{"claude-3.7-sonnet", "own-preset"} {
		status, body, _ := chatAs(ctx, t, gw1, a, model, "not mine")
		if e, _ := body["error"].(map[string]any); status != http.StatusUnauthorized || e["code"] != "key_model_access_denied" {
			t.Errorf("A asking for %s: %d %v; want 401 key_model_access_denied", model, status, body)
		}
	}

	// B's view of A's work: A makes a job, a file and a batch from it.
	jobID := submitJobAs(ctx, t, gw0, a)
	fileID := uploadFileAs(ctx, t, gw0, a)
	status, batch, _ := keyCall(ctx, t, gw0, a, http.MethodPost, "/v1/batches", map[string]any{"input_file_id": fileID, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
	batchID, _ := batch["id"].(string)
	if status != http.StatusOK || batchID == "" {
		t.Fatalf("A's batch: %d %v", status, batch)
	}
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/v1/files/" + fileID},
		{http.MethodGet, "/v1/files/" + fileID + "/content"},
		{http.MethodDelete, "/v1/files/" + fileID},
		{http.MethodGet, "/v1/batches/" + batchID},
		{http.MethodPost, "/v1/batches/" + batchID + "/cancel"},
		{http.MethodGet, "/v1/queue/jobs/" + jobID},
		{http.MethodDelete, "/v1/queue/jobs/" + jobID},
	} {
		if status, body, _ := keyCall(ctx, t, gw1, b, c.method, c.path, nil); status != http.StatusNotFound {
			t.Errorf("B: %s %s = %d %v; want 404", c.method, c.path, status, body)
		}
		if c.method == http.MethodGet {
			if status, body, _ := keyCall(ctx, t, gw1, a, c.method, c.path, nil); status != http.StatusOK {
				t.Errorf("A: %s %s = %d %v; want 200", c.method, c.path, status, body)
			}
		}
	}
	for _, list := range []string{"/v1/files", "/v1/batches"} {
		if _, body, _ := keyCall(ctx, t, gw1, b, http.MethodGet, list, nil); len(asList(body["data"])) != 0 {
			t.Errorf("B lists %s: %v; want none of A's", list, body["data"])
		}
	}

	// The batch's line takes its slot when the batch runner queues it.
	for begin := time.Now(); ; time.Sleep(50 * time.Millisecond) {
		_, got, _ := keyCall(ctx, t, gw0, a, http.MethodGet, "/v1/batches/"+batchID, nil)
		if got["status"] == "completed" {
			break
		}
		if time.Since(begin) > time.Minute {
			t.Fatalf("A's batch did not complete within a minute: %v", got)
		}
	}

	// A's rpm: the job and the batch's line took two slots; 58 more pass
	// and the next is refused. (On a machine so slow that the job's slot
	// left the window meanwhile, one more passes: still 60 in the window.)
	var wg sync.WaitGroup
	var mu sync.Mutex
	statuses := map[int]int{}
	for i := range 58 {
		wg.Go(func() {
			status, _, _ := chatAs(ctx, t, s.gateways[i%2], a, "claude-3.5-sonnet", fmt.Sprintf("call %d", i))
			mu.Lock()
			statuses[status]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if statuses[http.StatusOK] != 58 {
		t.Fatalf("A's first calls in the minute: %v; want 58 answered", statuses)
	}
	var body map[string]any
	var h http.Header
	for extra := 0; ; extra++ {
		if status, body, h = chatAs(ctx, t, gw1, a, "claude-3.5-sonnet", "the 61st"); status != http.StatusOK || extra == 2 {
			if extra > 1 {
				t.Fatalf("%d calls past the 60th answered: the limit did not hold", extra+1)
			}
			break
		}
	}
	ra, _ := strconv.Atoi(h.Get("Retry-After"))
	if status != http.StatusTooManyRequests || ra < 1 || ra > 62 {
		t.Fatalf("A's 61st call: %d, Retry-After %q, %v; want 429 with Retry-After within the minute", status, h.Get("Retry-After"), body)
	}
	sent := time.Now()
	status, body, _ = chatAs(ctx, t, gw0, a, "claude-3.5-sonnet", "the 61st, waiting", "X-Laas-Bridge-Queue", "wait", "X-Request-Timeout", "120")
	if status != http.StatusOK {
		t.Fatalf("A's 61st call with wait: %d %v; want it answered late", status, body)
	}
	t.Logf("the waiting call was answered %s after it was sent (Retry-After said %d s)", time.Since(sent).Round(time.Millisecond), ra)

	// Deleting A on gateway 0: gateway 1 refuses A's next call.
	if status, body, _ := keyCall(ctx, t, gw0, testMasterKey, http.MethodPost, "/key/delete", map[string]any{"keys": []string{a}}); status != http.StatusOK {
		t.Fatalf("delete A: %d %v", status, body)
	}
	deleted := time.Now()
	for {
		status, _, _ := keyCall(ctx, t, gw1, a, http.MethodGet, "/v1/models", nil)
		if status == http.StatusUnauthorized {
			t.Logf("gateway 1 refused the deleted key %s after the delete", time.Since(deleted).Round(time.Millisecond))
			break
		}
		if time.Since(deleted) > 10*time.Second {
			t.Fatalf("gateway 1 still accepts key A 10 s after it was deleted on gateway 0 (last status %d)", status)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if status, _, _ := keyCall(ctx, t, gw1, b, http.MethodGet, "/v1/models", nil); status != http.StatusOK {
		t.Errorf("B after A's deletion: %d", status)
	}
}

func asList(v any) []any { l, _ := v.([]any); return l }

// submitJobAs queues an async job as key and returns its id.
func submitJobAs(ctx context.Context, t *testing.T, url, key string) string {
	t.Helper()
	status, out, _ := keyCall(ctx, t, url, key, http.MethodPost, "/v1/queue/jobs",
		map[string]any{"model": "claude-3.5-sonnet", "messages": []map[string]string{{"role": "user", "content": "a job"}}})
	id, _ := out["id"].(string)
	if status != http.StatusAccepted || id == "" {
		t.Fatalf("POST /v1/queue/jobs: %d %v", status, out)
	}
	return id
}

// uploadFileAs uploads a one-line batch input file as key.
func uploadFileAs(ctx context.Context, t *testing.T, url, key string) string {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	line, _ := json.Marshal(map[string]any{"custom_id": "l0", "method": "POST", "url": "/v1/chat/completions",
		"body": map[string]any{"model": "claude-3.5-sonnet", "messages": []map[string]string{{"role": "user", "content": "a line"}}}})
	_, _ = fw.Write(append(line, '\n'))
	mw.Close()
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, url+"/v1/files", &buf)
	req.Header.Set("Content-Type", mw.FormDataContentType())
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	id, _ := out["id"].(string)
	if resp.StatusCode != http.StatusOK || id == "" {
		t.Fatalf("upload: %d %s", resp.StatusCode, raw)
	}
	return id
}
