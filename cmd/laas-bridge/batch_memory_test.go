package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestBatchMemoryFlatFor200MiBInput: a gateway's memory does not grow with
// a batch's input file. A ~200 MB input file (2,000 lines of ~100 KB,
// each under the body limit) is uploaded to a gateway process and run as
// a batch (NATS, the gateway, a worker and the mock, each its own
// process, the mock answering at once); the gateway's peak RSS
// (VmHWM, reset after start-up) grows by less than 64 MiB over its RSS
// before the upload, during the upload and during the run to the end.
// The runner once held the whole file (and ~2x while loading it).
func TestBatchMemoryFlatFor200MiBInput(t *testing.T) {
	if testing.Short() {
		t.Skip("moves 200 MB through four processes")
	}
	const (
		n         = 2000
		pad       = 100_000 // bytes of a system message per line
		maxGrowth = 64 << 20
	)
	port := freePort(t)
	natsURL := fmt.Sprintf("nats://127.0.0.1:%d", port)
	startNATS(t, "nats", t.TempDir(), port)
	s := startStack(t, natsURL, 1, "0s", "BRIDGE_WORKER_CONCURRENCY=16")
	pid := s.gateway.cmd.Process.Pid
	status := func(field string) int64 {
		t.Helper()
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
		if err != nil {
			t.Fatalf("gateway status: %v", err)
		}
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, field+":"); ok {
				kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
				if err != nil {
					t.Fatalf("%s: %q: %v", field, l, err)
				}
				return kb << 10
			}
		}
		t.Fatalf("no %s in /proc/%d/status", field, pid)
		return 0
	}
	resetPeak := func() {
		t.Helper()
		// "5" resets the peak RSS (VmHWM) to the current RSS (proc(5)).
		if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0); err != nil {
			t.Fatalf("reset the gateway's VmHWM: %v", err)
		}
	}
	base := status("VmRSS")

	// The upload, streamed from a generator: the test holds no file either.
	line := func(i int) []byte {
		b, _ := json.Marshal(map[string]any{
			"custom_id": fmt.Sprintf("line-%d", i), "method": "POST", "url": "/v1/chat/completions",
			"body": map[string]any{"model": "claude-3.5-sonnet", "messages": []map[string]string{
				{"role": "system", "content": strings.Repeat("p", pad)},
				{"role": "user", "content": fmt.Sprintf("text %d", i)}}},
		})
		return append(b, '\n')
	}
	resetPeak()
	pr, pw := io.Pipe()
	mw := multipart.NewWriter(pw)
	var size int64
	go func() {
		err := mw.WriteField("purpose", "batch")
		var fw io.Writer
		if err == nil {
			fw, err = mw.CreateFormFile("file", "big.jsonl")
		}
		for i := 0; i < n && err == nil; i++ {
			var k int
			k, err = fw.Write(line(i))
			size += int64(k)
		}
		if err == nil {
			err = mw.Close()
		}
		pw.CloseWithError(err)
	}()
	resp, err := http.Post(s.url+"/v1/files", mw.FormDataContentType(), pr)
	if err != nil {
		t.Fatalf("upload: %v", err)
	}
	var file struct {
		ID    string `json:"id"`
		Bytes int64  `json:"bytes"`
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || json.Unmarshal(body, &file) != nil || file.Bytes != size {
		t.Fatalf("upload: %d %s; want 200 and %d bytes", resp.StatusCode, body, size)
	}
	upload := status("VmHWM")
	t.Logf("uploaded %d bytes (%.0f MiB); gateway RSS before %d MiB, peak during the upload %d MiB", size, float64(size)/(1<<20), base>>20, upload>>20)

	resetPeak()
	resp, err = http.Post(s.url+"/v1/batches", "application/json",
		strings.NewReader(fmt.Sprintf(`{"input_file_id":%q,"endpoint":"/v1/chat/completions","completion_window":"24h"}`, file.ID)))
	if err != nil {
		t.Fatal(err)
	}
	var b struct {
		ID            string `json:"id"`
		Status        string `json:"status"`
		OutputFileID  string `json:"output_file_id"`
		RequestCounts struct {
			Total, Completed, Failed int
		} `json:"request_counts"`
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || json.Unmarshal(body, &b) != nil {
		t.Fatalf("create batch: %d %s", resp.StatusCode, body)
	}
	var runPeak int64
	for deadline := time.Now().Add(15 * time.Minute); b.Status != "completed"; time.Sleep(time.Second) {
		if time.Now().After(deadline) || b.Status == "failed" || b.Status == "expired" {
			t.Fatalf("batch %s after %s: %+v", b.Status, 15*time.Minute, b.RequestCounts)
		}
		runPeak = max(runPeak, status("VmHWM"))
		resp, err := http.Get(s.url + "/v1/batches/" + b.ID)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err := json.Unmarshal(body, &b); err != nil {
			t.Fatalf("batch: %s: %v", body, err)
		}
	}
	runPeak = max(runPeak, status("VmHWM"))
	t.Logf("batch of %d lines completed; gateway peak RSS during the run %d MiB (before the upload %d MiB)", n, runPeak>>20, base>>20)
	if c := b.RequestCounts; c.Total != n || c.Completed != n || c.Failed != 0 {
		t.Errorf("request_counts %+v; want %d completed", c, n)
	}

	// The output file: one line per input line, counted as it streams.
	resp, err = http.Get(s.url + "/v1/files/" + b.OutputFileID + "/content")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	lines := 0
	for sc.Scan() {
		if !bytes.Contains(sc.Bytes(), []byte(`"status_code":200`)) {
			t.Errorf("output line %.200s; want a 200", sc.Bytes())
		}
		lines++
	}
	resp.Body.Close()
	if lines != n {
		t.Errorf("output file: %d lines; want %d", lines, n)
	}

	if grew := upload - base; grew > maxGrowth {
		t.Errorf("the gateway's RSS grew %d MiB during the upload of %d MiB; want under %d MiB", grew>>20, size>>20, maxGrowth>>20)
	}
	if grew := runPeak - base; grew > maxGrowth {
		t.Errorf("the gateway's RSS grew %d MiB while it ran a batch of %d MiB; want under %d MiB", grew>>20, size>>20, maxGrowth>>20)
	}
}
