package main

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"

	"github.com/laas-bridge/laas-bridge/schema"
)

// TestBatchSurvivesKillingEveryProcess: a batch of 2,000 lines, with NATS,
// two gateways (each running a batch runner) and two workers as separate
// processes, all killed with SIGKILL midway and started again, finishes
// with every line answered, and LaaS answered each line exactly once: the
// mock's access log, which records each call's preset hash, and every line
// names its own preset, shows one 200 per line.
func TestBatchSurvivesKillingEveryProcess(t *testing.T) {
	const n = 2000
	port := freePort(t)
	store := t.TempDir()
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	natsProc := startNATS(t, "nats", store, port)
	cfg, _ := filepath.Abs("testdata/batch-config.yaml")
	s := startStack(t, natsURL, 2, "1s", "BRIDGE_WORKER_CONCURRENCY=50", "BRIDGE_CONFIG="+cfg)
	gw2, _ := startProc(t, "gateway-2", t.TempDir(), s.env, gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	mockOK := func() int { return logLines(s.mock.logs.String(), `"status":200`) }

	lines := make([]string, n)
	for i := range lines {
		b, _ := json.Marshal(map[string]any{
			"custom_id": fmt.Sprintf("line-%d", i), "method": "POST", "url": "/v1/chat/completions",
			"body": map[string]any{"model": "claude-3.5-sonnet", "preset_hash": fmt.Sprintf("line-%d", i),
				"messages": []map[string]string{{"role": "user", "content": fmt.Sprintf("text %d", i)}}},
		})
		lines[i] = string(b)
	}
	c := client(&instance{url: s.url}, "sk")
	b := uploadBatch(t, c, lines, nil)

	// Kill between two waves of calls (the mock answers after 1 s, the
	// calls of a wave end together): once a few waves are done, wait until
	// no answer came for 100 ms and every answered call has its answer
	// stored (LAAS_ANSWERS holds one key per answered line), so the kill
	// cuts off only calls LaaS has not answered. A fixed quiet time is not
	// enough: on a loaded machine a worker may take longer than that to
	// store the answer it just got, and the kill would lose it.
	js := connectJS(t, natsURL)
	stored := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := js.Stream(ctx, "KV_"+schema.BucketAnswers)
		if err != nil {
			return -1
		}
		return int(st.CachedInfo().State.Msgs)
	}
	for start := time.Now(); mockOK() < 300; time.Sleep(20 * time.Millisecond) {
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("LaaS answered %d lines in 2 minutes", mockOK())
		}
	}
	for start, last, quiet := time.Now(), mockOK(), time.Now(); ; time.Sleep(5 * time.Millisecond) {
		if now := mockOK(); now != last {
			last, quiet = now, time.Now()
			continue
		}
		if time.Since(quiet) >= 100*time.Millisecond && stored() >= last {
			break
		}
		if time.Since(start) > 2*time.Minute {
			t.Fatalf("no moment to kill in 2 minutes: LaaS answered %d lines, %d answers stored", last, stored())
		}
	}
	before := mockOK()
	for _, p := range append(append([]*proc{}, s.workers...), s.gateway, gw2, natsProc) {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
	t.Logf("SIGKILL of NATS, 2 gateways and 2 workers after %d of %d lines were answered", before, n)
	if before >= n {
		t.Fatal("the batch was done before the kill")
	}

	// Start everything again, against the same mock.
	natsProc = startNATS(t, "nats-restarted", store, port)
	var procs []*proc
	gw, addr := startProc(t, "gateway-restarted", t.TempDir(), s.env, gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	procs = append(procs, gw)
	gw, _ = startProc(t, "gateway-2-restarted", t.TempDir(), s.env, gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	procs = append(procs, gw)
	for i := range 2 {
		w, _ := startProc(t, fmt.Sprintf("worker-%d-restarted", i), t.TempDir(), s.env, workerReady, "worker")
		procs = append(procs, w)
	}
	c = client(&instance{url: "http://" + addr}, "sk")
	b = waitBatch(t, c, b.ID, 5*time.Minute, openai.BatchStatusCompleted, openai.BatchStatusFailed, openai.BatchStatusExpired)
	if b.Status != openai.BatchStatusCompleted || b.RequestCounts.Total != n || b.RequestCounts.Completed != n || b.RequestCounts.Failed != 0 {
		t.Fatalf("batch after the restart: %s %+v", b.Status, b.RequestCounts)
	}
	out := fileLines(t, c, b.OutputFileID)
	got := map[string]bool{}
	for _, l := range out {
		i := strings.TrimPrefix(*l.CustomID, "line-")
		if want := fmt.Sprintf("mock[line-%s]: text %s", i, i); l.content() != want || got[*l.CustomID] {
			t.Errorf("output line %s: %q (seen before: %v), want %q", *l.CustomID, l.content(), got[*l.CustomID], want)
		}
		got[*l.CustomID] = true
	}
	if len(got) != n || len(out) != n {
		t.Errorf("%d output lines for %d custom_ids, want %d", len(out), len(got), n)
	}
	// The witness: one answered LaaS call per line, none twice.
	perLine := map[string]int{}
	aborted := 0
	for _, line := range strings.Split(s.mock.logs.String(), "\n") {
		var e struct {
			Status int    `json:"status"`
			Hash   string `json:"hash"`
		}
		if json.Unmarshal([]byte(line), &e) != nil || e.Hash == "" {
			continue
		}
		switch e.Status {
		case 200:
			perLine[e.Hash]++
		default:
			aborted++
		}
	}
	for i := range n {
		if k := fmt.Sprintf("line-%d", i); perLine[k] != 1 {
			t.Errorf("LaaS answered %s %d times, want once", k, perLine[k])
		}
	}
	t.Logf("LaaS answered %d lines (%d before the kill); %d calls cut off by the kill", len(perLine), before, aborted)
	if aborted == 0 {
		t.Error("no LaaS call was in flight at the kill: the test did not kill the workers mid-batch")
	}
	for _, p := range append(procs, s.mock, natsProc) {
		p.stop(t)
	}
}
