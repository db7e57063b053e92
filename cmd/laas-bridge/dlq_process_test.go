package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
	"github.com/laas-bridge/laas-bridge/worker"
)

// TestDLQReplayLargeProcess: a dead letter whose request is over half the
// NATS max payload (kept in LAAS_BODIES as <id>.dead) is replayed by the
// `laas-bridge dlq replay` process against a running `serve --demo`: the
// replay is queued as a job of its own, LaaS (the demo's mock) answers it,
// the answer is stored as the job's result, and the dead letter and its
// body are gone. Before the admission core, the replay named a body the
// worker refuses, and the request was lost.
func TestDLQReplayLargeProcess(t *testing.T) {
	root, _ := filepath.Abs("../..")
	serve, addr := startProc(t, "serve --demo", root, baseEnv(), gatewayReady,
		"serve", "--demo", "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--data-dir", t.TempDir())
	natsURL, seed := servedNATS(t, serve.logs.String())

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	js := connectJS(t, natsURL, seedOption(t, seed))
	dead, err := worker.NewDeadLetters(ctx, js, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	text := strings.Repeat("x", int(js.Conn().MaxPayload()/2))
	body, _ := json.Marshal(map[string]any{"model": "claude-3.5-sonnet", "messages": []map[string]string{{"role": "user", "content": text}}})
	now := time.Now()
	if err := dead.DeadLetter(ctx, worker.DeadLetter{
		Envelope: schema.Envelope{ID: "big-1", Model: "claude-3.5-sonnet", EnqueuedAt: now, Deadline: now.Add(time.Minute), Request: body},
		Reason:   schema.ErrorDetail{Message: "LaaS answered HTTP 503", Type: schema.TypeUpstream}, Status: 503, Attempts: 5,
		LastAttempt: now, FailedAt: now,
	}); err != nil {
		t.Fatal(err)
	}
	bodies, err := js.ObjectStore(ctx, schema.BucketBodies)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bodies.GetInfo(ctx, "big-1.dead"); err != nil {
		t.Fatalf("the dead letter's body is not in %s: %v", schema.BucketBodies, err)
	}

	replay := exec.CommandContext(ctx, binary, "dlq", "replay", "big-1", "--nats-url", natsURL)
	replay.Dir, replay.Env = root, baseEnv("NATS_NKEY_SEED="+seed)
	var stderr strings.Builder
	replay.Stderr = &stderr
	out, err := replay.Output()
	if err != nil {
		t.Fatalf("dlq replay: %v\n%s%s", err, out, stderr.String())
	}
	m := regexp.MustCompile(`^replayed big-1 \(model claude-3.5-sonnet, 5 attempts, failed \S+\) to laas\.requests\.lane\.batch as job (big-1-replay-\d+), timeout 10m0s\n$`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("dlq replay printed %q", out)
	}
	jobID := string(m[1])

	job := waitJob(t, ctx, "http://"+addr, jobID)
	if job.Status != schema.JobSucceeded || job.Result == nil || len(job.Result.Choices) != 1 ||
		job.Result.Choices[0].Message.Content != "mock[demo-preset]: "+text {
		t.Fatalf("job %s: status %s, error %+v; want the mock's answer to the whole request", jobID, job.Status, job.Error)
	}
	if _, err := bodies.GetInfo(ctx, "big-1.dead"); !errors.Is(err, jetstream.ErrObjectNotFound) {
		t.Errorf("the dead letter's body after the replay: %v, want it deleted", err)
	}
	list := exec.CommandContext(ctx, binary, "dlq", "list", "--nats-url", natsURL)
	list.Dir, list.Env = root, baseEnv("NATS_NKEY_SEED="+seed)
	if out, err := list.CombinedOutput(); err != nil || !strings.HasSuffix(string(out), "no dead letters in LAAS_DEAD\n") {
		t.Errorf("dlq list after the replay: %v\n%s", err, out)
	}
}

// waitJob long-polls GET /v1/queue/jobs/{id} until the job is final; it
// fails the test when ctx ends first.
func waitJob(t *testing.T, ctx context.Context, base, id string) jobView {
	t.Helper()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/queue/jobs/"+id+"?wait=30s", nil)
		req.Header.Set("Authorization", "Bearer sk-1234")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("job %s never finished: %v", id, err)
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET job %s: %d %s", id, resp.StatusCode, data)
		}
		var j jobView
		if err := json.Unmarshal(data, &j); err != nil {
			t.Fatalf("GET job %s: %v", id, err)
		}
		if j.Status.Final() {
			return j
		}
		if ctx.Err() != nil {
			t.Fatal(fmt.Errorf("job %s still %s: %w", id, j.Status, ctx.Err()))
		}
	}
}

// jobView is the part of the jobs API's answer the tests read.
type jobView struct {
	Status schema.JobStatus       `json:"status"`
	Result *schema.ChatCompletion `json:"result"`
	Error  *schema.ErrorDetail    `json:"error"`
}
