package batch

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// writeFiles writes the output file (answers with status 200) and the
// error file (every other answer, and the lines refused up front), each
// only when it has a line, and returns their ids and the counts.
func (d *driver) writeFiles(ctx context.Context) (out, errFile *string, completed, failed int, err error) {
	outTmp, err := os.CreateTemp("", "laas-batch-out-*.jsonl")
	if err != nil {
		return nil, nil, 0, 0, err
	}
	defer func() { outTmp.Close(); os.Remove(outTmp.Name()) }()
	errTmp, err := os.CreateTemp("", "laas-batch-err-*.jsonl")
	if err != nil {
		return nil, nil, 0, 0, err
	}
	defer func() { errTmp.Close(); os.Remove(errTmp.Name()) }()
	ow, ew := bufio.NewWriter(outTmp), bufio.NewWriter(errTmp)
	outLines, errLines := 0, 0
	writeLine := func(w *bufio.Writer, l schema.BatchOutputLine) error {
		data, err := json.Marshal(l)
		if err != nil {
			return err
		}
		_, err = w.Write(append(data, '\n'))
		return err
	}

	pos := make(map[int]int, len(d.plan.Valid))
	for i, l := range d.plan.Valid {
		pos[l.Line] = i
	}
	seen := make([]bool, len(d.plan.Valid))
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	watch, err := d.r.answers.Watch(wctx, "batch."+d.id+".*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, nil, 0, 0, fmt.Errorf("read answers: %w", err)
	}
	defer func() { _ = watch.Stop() }()
	for e := range watch.Updates() {
		if e == nil {
			break
		}
		line, ok := lineOf(e.Key())
		p, known := pos[line]
		if !ok || !known || seen[p] {
			continue
		}
		seen[p] = true
		l, isOutput, notRun := outputLine(d.id, d.plan.Valid[p], e.Value())
		switch {
		case isOutput:
			outLines++
			completed++
			err = writeLine(ow, l)
		default:
			errLines++
			if !notRun || l.Error.Code != schema.CodeBatchCancelled {
				failed++
			}
			err = writeLine(ew, l)
		}
		if err != nil {
			return nil, nil, 0, 0, err
		}
	}
	if wctx.Err() != nil {
		return nil, nil, 0, 0, wctx.Err()
	}
	for p, l := range d.plan.Valid {
		if seen[p] {
			continue
		}
		// No answer at all: it was lost (the answers bucket's TTL passed).
		cid := l.CustomID
		errLines++
		failed++
		if err := writeLine(ew, schema.BatchOutputLine{ID: requestLineID(d.id, l.Line), CustomID: &cid,
			Error: &schema.BatchLineError{Code: "answer_lost", Message: "The answer to this request was lost; run it again."}}); err != nil {
			return nil, nil, 0, 0, err
		}
	}
	for _, l := range d.plan.Errors {
		errLines++
		failed++
		if err := writeLine(ew, l); err != nil {
			return nil, nil, 0, 0, err
		}
	}
	if err := ow.Flush(); err != nil {
		return nil, nil, 0, 0, err
	}
	if err := ew.Flush(); err != nil {
		return nil, nil, 0, 0, err
	}
	suffix := strings.TrimPrefix(d.id, "batch_")
	put := func(f *os.File, lines int, kind string) (*string, error) {
		if lines == 0 {
			return nil, nil
		}
		if _, err := f.Seek(0, 0); err != nil {
			return nil, err
		}
		id := "file-" + suffix + "-" + kind
		if _, err := d.r.store.PutFile(ctx, id, d.id+"_"+kind+".jsonl", schema.PurposeBatchOutput, lines, f); err != nil {
			return nil, fmt.Errorf("store %s file: %w", kind, err)
		}
		return &id, nil
	}
	if out, err = put(outTmp, outLines, "output"); err != nil {
		return nil, nil, 0, 0, err
	}
	if errFile, err = put(errTmp, errLines, "error"); err != nil {
		return nil, nil, 0, 0, err
	}
	return out, errFile, completed, failed, nil
}

// outputLine turns a kept answer into its line: isOutput for a 200, notRun
// for the batch's own "expired" or "cancelled" mark.
func outputLine(batchID string, l PlanLine, v []byte) (line schema.BatchOutputLine, isOutput, notRun bool) {
	cid := l.CustomID
	line = schema.BatchOutputLine{ID: requestLineID(batchID, l.Line), CustomID: &cid}
	var rep schema.Reply
	if err := json.Unmarshal(v, &rep); err != nil {
		line.Error = &schema.BatchLineError{Code: "answer_unreadable", Message: "The answer to this request could not be read; run it again."}
		return line, false, false
	}
	jobID := JobID(batchID, l.Line)
	switch {
	case rep.Status == 0 && rep.Error != nil && rep.Error.Code != nil:
		line.Error = &schema.BatchLineError{Code: *rep.Error.Code, Message: rep.Error.Message}
		return line, false, true
	case rep.Status == 200 && rep.Completion != nil:
		body, _ := json.Marshal(rep.Completion)
		line.Response = &schema.BatchOutputResponse{StatusCode: 200, RequestID: jobID, Body: body}
		return line, true, false
	case rep.Error != nil:
		body, _ := json.Marshal(schema.ErrorBody{Error: *rep.Error})
		line.Response = &schema.BatchOutputResponse{StatusCode: rep.Status, RequestID: jobID, Body: body}
		return line, false, false
	}
	line.Error = &schema.BatchLineError{Code: "answer_unreadable", Message: "The answer to this request could not be read; run it again."}
	return line, false, false
}
