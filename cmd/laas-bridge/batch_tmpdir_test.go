package main

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
)

// TestBatchWithoutTempDir: the batch round trip (upload, create, run,
// download the output and error files) works where nothing can be
// created in the temporary directory, as in the k8s manifests' gateway (a
// read-only root filesystem, no writable /tmp): the product writes no
// temporary file. TMPDIR is a path under a regular file, so creating
// anything there fails with ENOTDIR even for root (the tests run as root
// here, and root writes into a 0555 directory regardless).
func TestBatchWithoutTempDir(t *testing.T) {
	// The test's own directories first: t.TempDir makes its parent in
	// TMPDIR on the first call only.
	notDir := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(notDir, nil, 0o444); err != nil {
		t.Fatal(err)
	}
	_, in := serveWithMock(t, 0)
	t.Setenv("TMPDIR", filepath.Join(notDir, "tmp"))
	if f, err := os.CreateTemp("", "probe-*"); err == nil {
		f.Close()
		os.Remove(f.Name())
		t.Fatalf("created %s in TMPDIR; the test needs a TMPDIR nothing can be created in", f.Name())
	}

	c := client(in, "sk")
	const good = 5
	var lines []string
	for i := range good {
		lines = append(lines, batchLine(fmt.Sprintf("req-%d", i), "claude-3.5-sonnet", fmt.Sprintf("line %d", i)))
	}
	lines = append(lines, batchLine("bad-model", "no-such-model", "x"))
	b := uploadBatch(t, c, lines, nil)
	b = waitBatch(t, c, b.ID, 60*time.Second, openai.BatchStatusCompleted, openai.BatchStatusFailed)
	if b.Status != openai.BatchStatusCompleted {
		t.Fatalf("batch ended %s: %+v", b.Status, b.Errors)
	}
	if rc := b.RequestCounts; rc.Total != good+1 || rc.Completed != good || rc.Failed != 1 {
		t.Errorf("request_counts = %+v, want total %d, completed %d, failed 1", rc, good+1, good)
	}
	out := fileLines(t, c, b.OutputFileID)
	for _, l := range out {
		if l.CustomID == nil || l.Response == nil || l.Response.StatusCode != 200 || l.content() == "" {
			t.Errorf("output line = %+v", l)
		}
	}
	if len(out) != good {
		t.Errorf("%d output lines, want %d", len(out), good)
	}
	errs := fileLines(t, c, b.ErrorFileID)
	if len(errs) != 1 || errs[0].Error == nil || errs[0].Error.Code != "model_not_found" {
		t.Errorf("error file = %+v, want the bad-model line", errs)
	}
}
