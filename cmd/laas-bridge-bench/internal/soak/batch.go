package soak

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/laas-bridge/laas-bridge/batch/batchcli"
	"github.com/laas-bridge/laas-bridge/schema"
)

// batches starts a batch at BatchEvery/2 and then every BatchEvery while
// Duration lasts, and waits for all of them.
func (t Traffic) batches(ctx context.Context, bc batchcli.Client, l *Ledger, start time.Time) {
	done := make(chan struct{})
	n := 0
	for at := t.BatchEvery / 2; at < t.Duration; at += t.BatchEvery {
		if !sleepUntil(ctx, start.Add(at)) {
			break
		}
		n++
		go func(k int) {
			t.batch(ctx, bc, l, k)
			done <- struct{}{}
		}(n)
	}
	for range n {
		<-done
	}
}

// batch runs batch k through the Batch API (upload, create, poll to its
// end, download the output and error files) and records each line.
func (t Traffic) batch(ctx context.Context, bc batchcli.Client, l *Ledger, k int) {
	ctx, cancel := context.WithTimeout(ctx, t.Timeout)
	defer cancel()
	texts := make(map[string]string, t.BatchLines) // custom_id -> text
	var input bytes.Buffer
	enc := json.NewEncoder(&input)
	for i := range t.BatchLines {
		id := fmt.Sprintf("b%d-%d", k, i)
		texts[id] = fmt.Sprintf("soak batch %s %s", id, t.Nonce)
		_ = enc.Encode(schema.BatchInputLine{CustomID: id, Method: "POST", URL: "/v1/chat/completions", Body: t.chatBody(texts[id], false)})
		l.start()
	}
	start := time.Now()
	records, status := t.runBatch(ctx, bc, k, input.Bytes(), texts)
	for id, text := range texts {
		rs := records[id]
		if len(rs) == 0 {
			rs = []Record{{Problem: "not in the output or error file (batch " + status + ")"}}
		}
		for i, r := range rs {
			r.Kind, r.Text, r.Latency = KindBatchLine, text, time.Since(start)
			if i == 0 {
				l.finish(r)
			} else {
				l.Add(r) // a line answered twice: duplicated
			}
		}
	}
	for id, rs := range records {
		if _, ok := texts[id]; !ok {
			for _, r := range rs {
				r.Kind, r.Text = KindBatchLine, "custom_id "+id+" (not in the input)"
				l.Add(r)
			}
		}
	}
}

// runBatch submits the batch, waits for its end and reads its files: the
// records of its lines by custom_id, and the batch's status (or what went
// wrong).
func (t Traffic) runBatch(ctx context.Context, bc batchcli.Client, k int, input []byte, texts map[string]string) (map[string][]Record, string) {
	b, err := bc.Submit(ctx, fmt.Sprintf("soak-%d.jsonl", k), bytes.NewReader(input), map[string]string{"source": "laas-bridge-bench soak"})
	if err != nil {
		return nil, "not submitted: " + err.Error()
	}
	t.progress("bench: soak: batch %d (%s) of %d lines submitted\n", k, b.ID, len(texts))
	for !b.Final() {
		if !sleepUntil(ctx, time.Now().Add(time.Second)) {
			return nil, fmt.Sprintf("%s still %s at the timeout, %d of %d lines done", b.ID, b.Status, b.Done(), len(texts))
		}
		nb, err := bc.Get(ctx, b.ID)
		if err == nil {
			b = nb
		}
	}
	t.progress("bench: soak: batch %d (%s) %s: %d completed, %d failed\n", k, b.ID, b.Status, b.Counts.Completed, b.Counts.Failed)
	records := map[string][]Record{}
	for _, f := range []string{b.OutputFileID, b.ErrorFileID} {
		if f == "" {
			continue
		}
		if err := readBatchFile(ctx, bc, f, records); err != nil {
			return records, fmt.Sprintf("%s %s, file %s unreadable: %v", b.ID, b.Status, f, err)
		}
	}
	return records, b.ID + " " + b.Status
}

// readBatchFile adds a Record per line of a batch's output or error file.
func readBatchFile(ctx context.Context, bc batchcli.Client, fileID string, records map[string][]Record) error {
	rc, err := bc.Content(ctx, fileID)
	if err != nil {
		return err
	}
	defer rc.Close()
	return parseBatchFile(rc, records)
}

// parseBatchFile adds a Record per line of r, a batch output or error file.
func parseBatchFile(r io.Reader, records map[string][]Record) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 16<<20)
	for sc.Scan() {
		if len(bytes.TrimSpace(sc.Bytes())) == 0 {
			continue
		}
		var line schema.BatchOutputLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return fmt.Errorf("line %.100q: %w", sc.Text(), err)
		}
		if line.CustomID == nil {
			return fmt.Errorf("line without custom_id: %.200s", sc.Text())
		}
		var rec Record
		switch {
		case line.Response != nil && line.Response.StatusCode == 200:
			content, err := readCompletion(bytes.NewReader(line.Response.Body))
			if err != nil {
				rec.Problem = err.Error()
			} else {
				rec.Answer = answerText(content)
			}
		case line.Response != nil:
			rec.Problem = fmt.Sprintf("status %d: %.200s", line.Response.StatusCode, line.Response.Body)
		case line.Error != nil:
			rec.Problem = line.Error.Code + ": " + line.Error.Message
		default:
			rec.Problem = "line with neither response nor error"
		}
		records[*line.CustomID] = append(records[*line.CustomID], rec)
	}
	return sc.Err()
}

func (t Traffic) progress(format string, args ...any) {
	if t.Progress != nil {
		fmt.Fprintf(t.Progress, format, args...)
	}
}
