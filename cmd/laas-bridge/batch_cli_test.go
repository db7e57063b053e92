package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/batch/batchcli"
	"github.com/laas-bridge/laas-bridge/laas/laasmock"
)

// fakeBatchAPI is the OpenAI Batch API's shape, reduced to what the CLI
// calls, so the CLI's own behaviour (progress, files, Ctrl-C) can be
// checked exactly. The real Batch API is driven by the end-to-end tests.
type fakeBatchAPI struct {
	t   *testing.T
	key string

	mu       sync.Mutex
	upload   []byte
	metadata map[string]string
	polls    int
	// steps are the batch states returned by successive GETs; the last
	// one repeats.
	steps     []fakeStep
	cancelled bool
	calls     []string
}

type fakeStep struct {
	status                   string
	total, completed, failed int
	errors                   []map[string]any
}

const (
	fakeOutput = `{"id":"batch_req_1","custom_id":"a","response":{"status_code":200,"request_id":"r1","body":{}},"error":null}` + "\n"
	fakeErrors = `{"id":"batch_req_2","custom_id":"b","response":null,"error":{"code":"model_not_found","message":"no such model"}}` + "\n"
)

func (f *fakeBatchAPI) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, r.Method+" "+r.URL.Path)
	w.Header().Set("Content-Type", "application/json")
	if r.Header.Get("Authorization") != "Bearer "+f.key {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":{"message":"Invalid API key","type":"invalid_request_error","code":"invalid_api_key"}}`)
		return
	}
	switch {
	case r.Method == "POST" && r.URL.Path == "/v1/files":
		file, hdr, err := r.FormFile("file")
		if err != nil || r.FormValue("purpose") != "batch" {
			f.t.Errorf("upload: file %v, purpose %q", err, r.FormValue("purpose"))
			w.WriteHeader(400)
			return
		}
		f.upload, _ = io.ReadAll(file)
		json.NewEncoder(w).Encode(map[string]any{"id": "file-in", "object": "file", "bytes": len(f.upload), "filename": hdr.Filename, "purpose": "batch", "created_at": 1, "status": "processed"})
	case r.Method == "POST" && r.URL.Path == "/v1/batches":
		var p struct {
			InputFileID, Endpoint, CompletionWindow string
			Metadata                                map[string]string
		}
		var raw map[string]any
		b, _ := io.ReadAll(r.Body)
		json.Unmarshal(b, &raw)
		json.Unmarshal(b, &p)
		if raw["input_file_id"] != "file-in" || raw["endpoint"] != "/v1/chat/completions" || raw["completion_window"] != "24h" {
			f.t.Errorf("create batch: %s", b)
		}
		f.metadata = p.Metadata
		json.NewEncoder(w).Encode(f.batch(fakeStep{status: "validating"}))
	case r.Method == "GET" && r.URL.Path == "/v1/batches/batch_1":
		s := f.steps[min(f.polls, len(f.steps)-1)]
		f.polls++
		json.NewEncoder(w).Encode(f.batch(s))
	case r.Method == "POST" && r.URL.Path == "/v1/batches/batch_1/cancel":
		f.cancelled = true
		json.NewEncoder(w).Encode(f.batch(fakeStep{status: "cancelling", total: 2}))
	case r.Method == "GET" && r.URL.Path == "/v1/files/file-out/content":
		io.WriteString(w, fakeOutput)
	case r.Method == "GET" && r.URL.Path == "/v1/files/file-err/content":
		io.WriteString(w, fakeErrors)
	default:
		w.WriteHeader(404)
		io.WriteString(w, `{"error":{"message":"No batch found with id 'nope'.","type":"invalid_request_error","code":"not_found"}}`)
	}
}

func (f *fakeBatchAPI) batch(s fakeStep) map[string]any {
	b := map[string]any{
		"id": "batch_1", "object": "batch", "endpoint": "/v1/chat/completions", "input_file_id": "file-in",
		"completion_window": "24h", "status": s.status, "created_at": 1764100000,
		"request_counts": map[string]int{"total": s.total, "completed": s.completed, "failed": s.failed},
	}
	if s.status == "completed" || s.status == "failed" {
		b["output_file_id"], b["error_file_id"] = "file-out", "file-err"
	}
	if s.errors != nil {
		b["errors"] = map[string]any{"object": "list", "data": s.errors}
	}
	return b
}

func startFakeBatchAPI(t *testing.T, steps ...fakeStep) (*fakeBatchAPI, string) {
	t.Helper()
	f := &fakeBatchAPI{t: t, key: "sk-cli-secret", steps: steps}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	t.Setenv("BRIDGE_URL", srv.URL)
	t.Setenv("BRIDGE_API_KEY", f.key)
	return f, srv.URL
}

func writeInput(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "in.jsonl")
	in := `{"custom_id":"a","method":"POST","url":"/v1/chat/completions","body":{"model":"m","messages":[{"role":"user","content":"hi"}]}}` + "\n"
	if err := os.WriteFile(p, []byte(in), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func runBatchCmd(ctx context.Context, args ...string) (stdout, stderr string, err error) {
	var o, e bytes.Buffer
	err = run(ctx, append([]string{"batch"}, args...), &o, &e)
	return o.String(), e.String(), err
}

func TestBatchSubmitWaitWritesResults(t *testing.T) {
	f, _ := startFakeBatchAPI(t,
		fakeStep{status: "in_progress", total: 2},
		fakeStep{status: "in_progress", total: 2, completed: 1},
		fakeStep{status: "completed", total: 2, completed: 1, failed: 1},
	)
	in := writeInput(t)
	out := filepath.Join(t.TempDir(), "results.jsonl")
	stdout, stderr, err := runBatchCmd(context.Background(), "submit", in, "--wait", "--out", out, "--poll", "10ms", "--metadata", "team=search")
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, stderr)
	}
	if stdout != "batch_1\n" {
		t.Errorf("stdout %q, want the batch id", stdout)
	}
	want, _ := os.ReadFile(in)
	if !bytes.Equal(f.upload, want) {
		t.Errorf("uploaded %q, want the input file", f.upload)
	}
	if f.metadata["team"] != "search" {
		t.Errorf("metadata %v", f.metadata)
	}
	if got, _ := os.ReadFile(out); string(got) != fakeOutput {
		t.Errorf("output file %q", got)
	}
	errFile := strings.TrimSuffix(out, ".jsonl") + ".errors.jsonl"
	if got, _ := os.ReadFile(errFile); string(got) != fakeErrors {
		t.Errorf("error file %q", got)
	}
	// Plain progress lines (stderr is not a terminal), one per change.
	for _, line := range []string{
		"batch_1 validating: 0/0 done, 0 failed\n",
		"batch_1 in_progress: 0/2 done, 0 failed\n",
		"batch_1 in_progress: 1/2 done, 0 failed",
		"batch_1 completed: 2/2 done, 1 failed",
		"batch_1: 1 completed, 1 failed; output in " + out + ", errors in " + errFile + "\n",
	} {
		if !strings.Contains(stderr, line) {
			t.Errorf("stderr lacks %q:\n%s", line, stderr)
		}
	}
	if n := strings.Count(stderr, "batch_1 in_progress: 0/2"); n != 1 {
		t.Errorf("an unchanged state printed %d times, want once:\n%s", n, stderr)
	}
	if strings.Contains(stderr+stdout, f.key) {
		t.Error("the key appears in the output")
	}
}

func TestBatchSubmitWithoutWait(t *testing.T) {
	f, _ := startFakeBatchAPI(t, fakeStep{status: "in_progress", total: 1})
	stdout, stderr, err := runBatchCmd(context.Background(), "submit", writeInput(t))
	if err != nil {
		t.Fatal(err)
	}
	if stdout != "batch_1\n" || stderr != "batch batch_1 validating; follow it with: laas-bridge batch status batch_1\n" {
		t.Errorf("stdout %q stderr %q", stdout, stderr)
	}
	if f.polls != 0 {
		t.Errorf("polled %d times without --wait", f.polls)
	}
}

func TestBatchCtrlCLeavesBatchRunning(t *testing.T) {
	f, _ := startFakeBatchAPI(t, fakeStep{status: "in_progress", total: 5, completed: 2})
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		for {
			f.mu.Lock()
			p := f.polls
			f.mu.Unlock()
			if p >= 2 {
				cancel() // what SIGINT does to main's context
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	_, stderr, err := runBatchCmd(ctx, "submit", writeInput(t), "--wait", "--poll", "10ms")
	if !errors.Is(err, errInterrupted) {
		t.Fatalf("err %v, want errInterrupted", err)
	}
	if f.cancelled {
		t.Error("Ctrl-C cancelled the batch")
	}
	if !strings.Contains(stderr, "stopped following; batch batch_1 keeps running.\nfollow it with: laas-bridge batch status batch_1\n") {
		t.Errorf("stderr:\n%s", stderr)
	}
}

func TestBatchStatusResultsCancel(t *testing.T) {
	f, _ := startFakeBatchAPI(t, fakeStep{status: "completed", total: 2, completed: 1, failed: 1})
	stdout, _, err := runBatchCmd(context.Background(), "status", "batch_1")
	if err != nil {
		t.Fatal(err)
	}
	want := "id:       batch_1\nstatus:   completed\nprogress: 2/2 done, 1 failed\ncreated:  2025-11-25T19:46:40Z\ninput:    file-in\noutput:   file-out\nerrors:   file-err\n"
	if stdout != want {
		t.Errorf("status:\n%s\nwant:\n%s", stdout, want)
	}
	stdout, _, err = runBatchCmd(context.Background(), "status", "batch_1", "--json")
	var b batchcli.Batch
	if err != nil || json.Unmarshal([]byte(stdout), &b) != nil || b.Counts.Failed != 1 || b.OutputFileID != "file-out" {
		t.Errorf("status --json: %v %q", err, stdout)
	}
	stdout, stderr, err := runBatchCmd(context.Background(), "results", "batch_1")
	if err != nil || stdout != fakeOutput || stderr != fakeErrors {
		t.Errorf("results: %v\nstdout %q\nstderr %q", err, stdout, stderr)
	}
	stdout, _, err = runBatchCmd(context.Background(), "cancel", "batch_1")
	if err != nil || stdout != "batch_1 cancelling\n" || !f.cancelled {
		t.Errorf("cancel: %v %q cancelled=%v", err, stdout, f.cancelled)
	}
}

func TestBatchResultsBeforeTheEnd(t *testing.T) {
	startFakeBatchAPI(t, fakeStep{status: "in_progress", total: 4, completed: 1})
	_, _, err := runBatchCmd(context.Background(), "results", "batch_1", "--out", filepath.Join(t.TempDir(), "r.jsonl"))
	if err == nil || err.Error() != "batch batch_1 is in_progress: 1/4 done; results come when it ends" {
		t.Errorf("err %v", err)
	}
}

func TestBatchFailedBatchIsAnError(t *testing.T) {
	startFakeBatchAPI(t, fakeStep{status: "failed", total: 0, errors: []map[string]any{{"code": "invalid_file", "message": "no valid line", "line": 3}}})
	_, _, err := runBatchCmd(context.Background(), "submit", writeInput(t), "--wait", "--poll", "10ms")
	if err == nil || err.Error() != "batch batch_1 ended failed: line 3: invalid_file: no valid line" {
		t.Errorf("err %v", err)
	}
}

func TestBatchAPIErrorsAreOneLine(t *testing.T) {
	f, url := startFakeBatchAPI(t)
	_, _, err := runBatchCmd(context.Background(), "status", "nope")
	if err == nil || err.Error() != "batch nope: 404 No batch found with id 'nope'." {
		t.Errorf("err %v", err)
	}
	t.Setenv("BRIDGE_API_KEY", "sk-wrong-key")
	_, _, err = runBatchCmd(context.Background(), "status", "batch_1", "--url", url)
	if err == nil || err.Error() != "batch batch_1: 401 Invalid API key" {
		t.Errorf("err %v", err)
	}
	if strings.Contains(fmt.Sprint(err), "sk-wrong-key") || strings.Contains(fmt.Sprint(err), f.key) {
		t.Error("a key leaked into the error")
	}
}

func TestBatchUsageErrors(t *testing.T) {
	startFakeBatchAPI(t)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"submit"}, "batch submit needs an input file"},
		{[]string{"status"}, "batch status needs a batch id"},
		{[]string{"submit", "in.jsonl", "--out", "r.jsonl"}, "--out needs --wait"},
		{[]string{"frobnicate"}, `unknown batch command "frobnicate"`},
		{[]string{"status", "b", "extra"}, "unexpected arguments: extra"},
	} {
		_, stderr, err := runBatchCmd(context.Background(), tc.args...)
		if !errors.Is(err, errUsage) || !strings.Contains(stderr, tc.want) {
			t.Errorf("%v: err %v, stderr %q, want %q", tc.args, err, stderr, tc.want)
		}
	}
	_, _, err := runBatchCmd(context.Background(), "status", "b", "--url", "localhost:4000")
	if err == nil || err.Error() != `--url "localhost:4000": want http(s)://host[:port]` {
		t.Errorf("bad url: %v", err)
	}
	_, _, err = runBatchCmd(context.Background(), "submit", filepath.Join(t.TempDir(), "missing.jsonl"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: %v", err)
	}
}

// TestBatchCLIEndToEnd: `batch submit --wait --out` against a real bridge
// (serve with the mock) writes one output line per good input line, with
// its custom_id and the mock's answer, and the bad line in the error file;
// results, fetched again later, are the same bytes.
func TestBatchCLIEndToEnd(t *testing.T) {
	t.Run("http", func(t *testing.T) {
		mock, in := serveWithMock(t, 0)
		batchCLIEndToEnd(t, mock, "--url", in.url)
	})
	// --nats: the CLI writes the file and the batch record into JetStream
	// itself; the gateway's runner runs it. The HTTP URL points nowhere.
	t.Run("nats", func(t *testing.T) {
		mock, in := serveWithMock(t, 0, "--nats-listen", "127.0.0.1:0")
		url, seed := servedNATS(t, in.logs.String())
		t.Setenv("NATS_NKEY_SEED", seed) // the CLI signs in as serve's generated nkey user
		batchCLIEndToEnd(t, mock, "--nats", url, "--url", "http://127.0.0.1:1")
	})
}

func batchCLIEndToEnd(t *testing.T, mock *laasmock.Mock, target ...string) {
	dir := t.TempDir()
	input := filepath.Join(dir, "in.jsonl")
	var lines []string
	for i := range 20 {
		lines = append(lines, batchLine(fmt.Sprintf("q%d", i), "claude-3.5-sonnet", fmt.Sprintf("question %d", i)))
	}
	lines = append(lines, batchLine("bad", "no-such-model", "x"))
	if err := os.WriteFile(input, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "results.jsonl")
	stdout, stderr, err := runBatchCmd(context.Background(), append([]string{"submit", input, "--wait", "--out", out, "--poll", "100ms"}, target...)...)
	if err != nil {
		t.Fatalf("submit: %v\n%s", err, stderr)
	}
	id := strings.TrimSpace(stdout)
	if !strings.HasPrefix(id, "batch_") {
		t.Fatalf("stdout %q, want a batch id", stdout)
	}
	if !strings.Contains(stderr, id+": 20 completed, 1 failed; output in "+out) {
		t.Errorf("stderr:\n%s", stderr)
	}
	got := readJSONL(t, out)
	if len(got) != 20 {
		t.Fatalf("%d output lines, want 20", len(got))
	}
	seen := map[string]bool{}
	for _, l := range got {
		q := strings.TrimPrefix(*l.CustomID, "q")
		if want := "mock[h]: question " + q; l.content() != want || seen[*l.CustomID] {
			t.Errorf("line %s: content %q, want %q (seen before: %v)", *l.CustomID, l.content(), want, seen[*l.CustomID])
		}
		seen[*l.CustomID] = true
	}
	errs := readJSONL(t, strings.TrimSuffix(out, ".jsonl")+".errors.jsonl")
	if len(errs) != 1 || *errs[0].CustomID != "bad" || errs[0].Error == nil || errs[0].Error.Code != "model_not_found" {
		t.Errorf("error file: %+v", errs)
	}
	if n := mock.Calls(); n != 20 { // one LaaS call per good line
		t.Errorf("LaaS calls %d, want 20", n)
	}
	again := filepath.Join(dir, "again.jsonl")
	if _, stderr, err := runBatchCmd(context.Background(), append([]string{"results", id, "--out", again}, target...)...); err != nil {
		t.Fatalf("results: %v\n%s", err, stderr)
	}
	a, _ := os.ReadFile(out)
	b, _ := os.ReadFile(again)
	if !bytes.Equal(a, b) {
		t.Error("batch results differ from what submit --wait wrote")
	}
}

func readJSONL(t *testing.T, path string) []outLine {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []outLine
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		var l outLine
		if err := json.Unmarshal([]byte(line), &l); err != nil {
			t.Fatalf("%s: %q: %v", path, line, err)
		}
		out = append(out, l)
	}
	return out
}
