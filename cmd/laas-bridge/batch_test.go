package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/shared"
)

// batchLine is one line of a batch input file.
func batchLine(customID, model, text string) string {
	b, _ := json.Marshal(map[string]any{
		"custom_id": customID, "method": "POST", "url": "/v1/chat/completions",
		"body": map[string]any{"model": model, "messages": []map[string]string{{"role": "user", "content": text}}},
	})
	return string(b)
}

// outLine is a line of a batch's output or error file.
type outLine struct {
	ID       string  `json:"id"`
	CustomID *string `json:"custom_id"`
	Response *struct {
		StatusCode int             `json:"status_code"`
		RequestID  string          `json:"request_id"`
		Body       json.RawMessage `json:"body"`
	} `json:"response"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// content returns the assistant text of an output line's completion.
func (l outLine) content() string {
	var cc openai.ChatCompletion
	if l.Response == nil || json.Unmarshal(l.Response.Body, &cc) != nil || len(cc.Choices) == 0 {
		return ""
	}
	return cc.Choices[0].Message.Content
}

// fileLines downloads a file with the SDK and parses its JSONL.
func fileLines(t *testing.T, c *openai.Client, id string) []outLine {
	t.Helper()
	if id == "" {
		return nil
	}
	resp, err := c.Files.Content(context.Background(), id)
	if err != nil {
		t.Fatalf("files.content %s: %v", id, err)
	}
	defer resp.Body.Close()
	var out []outLine
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l outLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("file %s: line %q: %v", id, sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// uploadBatch uploads lines as a batch input file and creates the batch.
func uploadBatch(t *testing.T, c *openai.Client, lines []string, meta map[string]string) *openai.Batch {
	t.Helper()
	ctx := context.Background()
	data := strings.Join(lines, "\n") + "\n"
	f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(data), "input.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatalf("files.new: %v", err)
	}
	if f.Bytes != int64(len(data)) || f.Purpose != "batch" || f.Filename != "input.jsonl" || !strings.HasPrefix(f.ID, "file-") {
		t.Errorf("file = %+v", f)
	}
	b, err := c.Batches.New(ctx, openai.BatchNewParams{
		InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions,
		CompletionWindow: openai.BatchNewParamsCompletionWindow24h, Metadata: shared.Metadata(meta),
	})
	if err != nil {
		t.Fatalf("batches.new: %v", err)
	}
	if b.Status != openai.BatchStatusValidating || b.InputFileID != f.ID || !strings.HasPrefix(b.ID, "batch_") {
		t.Errorf("new batch = %+v", b)
	}
	return b
}

// waitBatch polls the batch until its status is one of want.
func waitBatch(t *testing.T, c *openai.Client, id string, timeout time.Duration, want ...openai.BatchStatus) *openai.Batch {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		b, err := c.Batches.Get(context.Background(), id)
		if err != nil {
			t.Fatalf("batches.get: %v", err)
		}
		for _, s := range want {
			if b.Status == s {
				return b
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("batch %s is %s after %s, want %v: %+v", id, b.Status, timeout, want, b.RequestCounts)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestBatchWithOpenAIClient: a batch driven with the official openai-go
// client from upload to a completed batch: each output line answers its
// own custom_id, bad lines end in the error file with their custom_id
// and do not fail the batch, counts add up, files can be read and deleted.
func TestBatchWithOpenAIClient(t *testing.T) {
	mock, in := serveWithMock(t, 0)
	c := client(in, "sk")
	ctx := context.Background()
	const good = 30
	var lines []string
	for i := range good {
		lines = append(lines, batchLine(fmt.Sprintf("req-%d", i), "claude-3.5-sonnet", fmt.Sprintf("line %d", i)))
	}
	lines = append(lines,
		batchLine("bad-model", "no-such-model", "x"),
		batchLine("req-0", "claude-3.5-sonnet", "a second req-0"),
		strings.Replace(batchLine("wrong-url", "claude-3.5-sonnet", "x"), "/v1/chat/completions", "/v1/embeddings", 1),
		`{"custom_id": "no-messages", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "claude-3.5-sonnet"}}`,
		`not json`,
		"",
	)
	b := uploadBatch(t, c, lines, map[string]string{"project": "test"})
	b = waitBatch(t, c, b.ID, 60*time.Second, openai.BatchStatusCompleted, openai.BatchStatusFailed)
	if b.Status != openai.BatchStatusCompleted {
		t.Fatalf("batch ended %s: %+v", b.Status, b.Errors)
	}
	if rc := b.RequestCounts; rc.Total != good+5 || rc.Completed != good || rc.Failed != 5 {
		t.Errorf("request_counts = %+v, want total %d, completed %d, failed 5", rc, good+5, good)
	}
	if b.Metadata["project"] != "test" || b.InProgressAt == 0 || b.FinalizingAt == 0 || b.CompletedAt == 0 || b.OutputFileID == "" || b.ErrorFileID == "" {
		t.Errorf("completed batch = %+v", b)
	}
	got := map[string]string{}
	for _, l := range fileLines(t, c, b.OutputFileID) {
		if l.CustomID == nil || l.Response == nil || l.Response.StatusCode != 200 || l.Error != nil || !strings.HasPrefix(l.ID, "batch_req_") {
			t.Errorf("output line = %+v", l)
			continue
		}
		got[*l.CustomID] = l.content()
	}
	for i := range good {
		if id, want := fmt.Sprintf("req-%d", i), fmt.Sprintf("mock[h]: line %d", i); got[id] != want {
			t.Errorf("output for %s = %q, want %q", id, got[id], want)
		}
	}
	if len(got) != good {
		t.Errorf("%d output lines, want %d", len(got), good)
	}
	wantErr := map[string]string{"bad-model": "model_not_found", "req-0": "duplicate_custom_id", "wrong-url": "invalid_batch_line", "no-messages": "invalid_value", "": "invalid_json"}
	errs := fileLines(t, c, b.ErrorFileID)
	for _, l := range errs {
		cid := ""
		if l.CustomID != nil {
			cid = *l.CustomID
		}
		if l.Error == nil || l.Response != nil || l.Error.Code != wantErr[cid] || l.Error.Message == "" {
			t.Errorf("error line for %q = %+v, want code %s", cid, l, wantErr[cid])
		}
	}
	if len(errs) != len(wantErr) {
		t.Errorf("%d error lines, want %d", len(errs), len(wantErr))
	}
	if calls := mock.Calls(); calls != good {
		t.Errorf("LaaS calls = %d, want %d (one per valid line)", calls, good)
	}

	t.Run("a completed batch cannot be cancelled", func(t *testing.T) {
		var e *openai.Error
		if _, err := c.Batches.Cancel(ctx, b.ID); !errorsAs(err, &e) || e.StatusCode != 409 || e.Code != "batch_not_cancellable" {
			t.Errorf("cancel a completed batch: %v", err)
		}
	})
	t.Run("files", func(t *testing.T) {
		f, err := c.Files.Get(ctx, b.OutputFileID)
		if err != nil || f.Purpose != "batch_output" || f.Bytes == 0 {
			t.Fatalf("files.get output = %+v, %v", f, err)
		}
		if _, err := c.Files.Delete(ctx, b.InputFileID); err != nil {
			t.Fatal(err)
		}
		_, err = c.Files.Get(ctx, b.InputFileID)
		var apiErr *openai.Error
		if !errorsAs(err, &apiErr) || apiErr.StatusCode != 404 {
			t.Errorf("files.get after delete: %v", err)
		}
	})
}

func errorsAs(err error, target **openai.Error) bool {
	e, ok := err.(*openai.Error)
	if ok {
		*target = e
	}
	return ok
}

// TestBatchCancel: a running batch cancelled with the SDK stops: lines not
// yet answered end in the error file as batch_cancelled, the answered ones
// in the output file, and LaaS is not called for the rest.
func TestBatchCancel(t *testing.T) {
	mock, in := serveWithMock(t, 1500*time.Millisecond)
	c := client(in, "sk")
	const n = 300
	var lines []string
	for i := range n {
		lines = append(lines, batchLine(fmt.Sprintf("req-%d", i), "claude-3.5-sonnet", fmt.Sprintf("line %d", i)))
	}
	b := uploadBatch(t, c, lines, nil)
	served := func() int {
		n := 0
		for _, e := range mock.Log() {
			if e.Status == 200 {
				n++
			}
		}
		return n
	}
	for start := time.Now(); served() == 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 60*time.Second {
			t.Fatal("LaaS answered no line of the batch")
		}
	}
	cb, err := c.Batches.Cancel(context.Background(), b.ID)
	if err != nil || (cb.Status != openai.BatchStatusCancelling && cb.Status != openai.BatchStatusCancelled) || cb.CancellingAt == 0 {
		t.Fatalf("batches.cancel = %+v, %v", cb, err)
	}
	b = waitBatch(t, c, b.ID, 60*time.Second, openai.BatchStatusCancelled)
	out, errs := fileLines(t, c, b.OutputFileID), fileLines(t, c, b.ErrorFileID)
	cancelled := 0
	for _, l := range errs {
		if l.Error == nil || l.Error.Code != "batch_cancelled" || l.CustomID == nil {
			t.Errorf("error line = %+v", l)
		}
		cancelled++
	}
	for _, l := range out {
		if want := "mock[h]: line " + strings.TrimPrefix(*l.CustomID, "req-"); l.content() != want {
			t.Errorf("output line %s = %q, want %q", *l.CustomID, l.content(), want)
		}
	}
	if len(out)+cancelled != n || cancelled == 0 {
		t.Errorf("%d answered + %d cancelled, want %d with some cancelled", len(out), cancelled, n)
	}
	if b.RequestCounts.Completed != int64(len(out)) || b.RequestCounts.Failed != 0 || b.CancelledAt == 0 {
		t.Errorf("cancelled batch = %+v", b)
	}
	// Nothing left runs: the calls LaaS answered are the output lines.
	time.Sleep(3 * time.Second)
	if s := served(); s > len(out) {
		t.Errorf("LaaS answered %d calls, the output holds %d: calls ran after the cancel", s, len(out))
	}
	t.Logf("cancelled after %d answered of %d; LaaS calls %d", len(out), n, mock.Calls())
	if again, err := c.Batches.Cancel(context.Background(), b.ID); err != nil || again.Status != openai.BatchStatusCancelled {
		t.Errorf("cancelling a cancelled batch again: %+v, %v", again, err)
	}
}

// TestBatchList: batches come newest first in OpenAI's list shape, and the
// SDK's auto-pager walks them with limit/after.
func TestBatchList(t *testing.T) {
	_, in := serveWithMock(t, 0)
	c := client(in, "sk")
	ctx := context.Background()
	var ids []string
	for i := range 5 {
		b := uploadBatch(t, c, []string{batchLine("a", "claude-3.5-sonnet", fmt.Sprint(i))}, nil)
		ids = append([]string{b.ID}, ids...) // newest first
		time.Sleep(2 * time.Millisecond)
	}
	page, err := c.Batches.List(ctx, openai.BatchListParams{Limit: openai.Int(2)})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Data) != 2 || !page.HasMore || page.Data[0].ID != ids[0] || page.Data[1].ID != ids[1] {
		t.Errorf("first page: %d items, has_more %v", len(page.Data), page.HasMore)
	}
	var walked []string
	iter := c.Batches.ListAutoPaging(ctx, openai.BatchListParams{Limit: openai.Int(2)})
	for iter.Next() {
		walked = append(walked, iter.Current().ID)
	}
	if err := iter.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(walked, ",") != strings.Join(ids, ",") {
		t.Errorf("auto-paged %v, want %v", walked, ids)
	}
	// The raw shape: first_id, last_id, has_more.
	resp, err := http.Get(in.url + "/v1/batches?limit=3&after=" + ids[0])
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var raw struct {
		Object  string            `json:"object"`
		Data    []json.RawMessage `json:"data"`
		FirstID string            `json:"first_id"`
		LastID  string            `json:"last_id"`
		HasMore bool              `json:"has_more"`
	}
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &raw); err != nil || raw.Object != "list" || len(raw.Data) != 3 || raw.FirstID != ids[1] || raw.LastID != ids[3] || !raw.HasMore {
		t.Errorf("GET /v1/batches?limit=3&after=: %s", body)
	}
}

// TestBatchRefusals: bad uploads and batch requests get OpenAI errors.
func TestBatchRefusals(t *testing.T) {
	_, in := serveWithMock(t, 0)
	c := client(in, "sk")
	ctx := context.Background()
	status := func(err error) int {
		var e *openai.Error
		if !errorsAs(err, &e) {
			return 0
		}
		return e.StatusCode
	}
	_, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader("x\n"), "a.jsonl", "application/jsonl"), Purpose: openai.FilePurposeAssistants})
	if status(err) != 400 {
		t.Errorf("purpose assistants: %v", err)
	}
	_, err = c.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(""), "a.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if status(err) != 400 {
		t.Errorf("empty file: %v", err)
	}
	_, err = c.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(strings.Repeat("{}\n", 50_001)), "a.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if status(err) != 400 {
		t.Errorf("50,001 lines: %v", err)
	}
	_, err = c.Batches.New(ctx, openai.BatchNewParams{InputFileID: "file-nope", Endpoint: openai.BatchNewParamsEndpointV1ChatCompletions, CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if status(err) != 404 {
		t.Errorf("unknown input file: %v", err)
	}
	f, err := c.Files.New(ctx, openai.FileNewParams{File: openai.File(strings.NewReader(batchLine("a", "claude-3.5-sonnet", "x")), "a.jsonl", "application/jsonl"), Purpose: openai.FilePurposeBatch})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Batches.New(ctx, openai.BatchNewParams{InputFileID: f.ID, Endpoint: openai.BatchNewParamsEndpointV1Embeddings, CompletionWindow: openai.BatchNewParamsCompletionWindow24h})
	if status(err) != 400 {
		t.Errorf("embeddings endpoint: %v", err)
	}
	if _, err := c.Batches.Get(ctx, "batch_nope"); status(err) != 404 {
		t.Errorf("unknown batch: %v", err)
	}
	if _, err := c.Files.Content(ctx, "file-nope"); status(err) != 404 {
		t.Errorf("unknown file content: %v", err)
	}
	// Without /v1, as the other routes.
	resp, err := http.Get(in.url + "/files/" + f.ID)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("GET /files/{id}: %v %v", resp, err)
	}
	resp.Body.Close()
}
