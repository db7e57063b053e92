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
	rf, err := newResultFiles()
	if err != nil {
		return nil, nil, 0, 0, err
	}
	defer rf.remove()
	seen, err := d.writeAnswers(ctx, rf)
	if err != nil {
		return nil, nil, 0, 0, err
	}
	for p, l := range d.plan.Valid {
		if seen[p] {
			continue
		}
		// No answer at all: it was lost (the answers bucket's TTL passed).
		cid := l.CustomID
		if err := rf.writeError(schema.BatchOutputLine{ID: requestLineID(d.id, l.Line), CustomID: &cid,
			Error: &schema.BatchLineError{Code: "answer_lost", Message: "The answer to this request was lost; run it again."}}, true); err != nil {
			return nil, nil, 0, 0, err
		}
	}
	for _, l := range d.plan.Errors {
		if err := rf.writeError(l, true); err != nil {
			return nil, nil, 0, 0, err
		}
	}
	if err := rf.flush(); err != nil {
		return nil, nil, 0, 0, err
	}
	if out, err = d.putResultFile(ctx, rf.out, "output"); err != nil {
		return nil, nil, 0, 0, err
	}
	if errFile, err = d.putResultFile(ctx, rf.err, "error"); err != nil {
		return nil, nil, 0, 0, err
	}
	return out, errFile, rf.completed, rf.failed, nil
}

// writeAnswers writes every kept answer of the batch's valid lines, once
// per line, and returns which positions of d.plan.Valid had one.
func (d *driver) writeAnswers(ctx context.Context, rf *resultFiles) ([]bool, error) {
	pos := make(map[int]int, len(d.plan.Valid))
	for i, l := range d.plan.Valid {
		pos[l.Line] = i
	}
	seen := make([]bool, len(d.plan.Valid))
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	watch, err := d.r.answers.Watch(wctx, "batch."+d.id+".*", jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("read answers: %w", err)
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
		if isOutput {
			err = rf.writeOutput(l)
		} else {
			// A line the batch's cancel left unrun does not count as failed.
			err = rf.writeError(l, !notRun || l.Error.Code != schema.CodeBatchCancelled)
		}
		if err != nil {
			return nil, err
		}
	}
	if wctx.Err() != nil {
		return nil, wctx.Err()
	}
	return seen, nil
}

// putResultFile stores the file of kind ("output" or "error") when it has
// a line and returns its id; nil when it has none. The file belongs to
// the batch's owner.
func (d *driver) putResultFile(ctx context.Context, f *resultFile, kind string) (*string, error) {
	if f.lines == 0 {
		return nil, nil
	}
	if _, err := f.f.Seek(0, 0); err != nil {
		return nil, err
	}
	id := "file-" + strings.TrimPrefix(d.id, "batch_") + "-" + kind
	if _, err := d.r.store.PutFile(ctx, id, d.record().CreatedBy, d.id+"_"+kind+".jsonl", schema.PurposeBatchOutput, f.lines, f.f); err != nil {
		return nil, fmt.Errorf("store %s file: %w", kind, err)
	}
	return &id, nil
}

// resultFiles are the output and error files being written, in temporary
// files, with the batch's counts.
type resultFiles struct {
	out, err          *resultFile
	completed, failed int
}

// resultFile is one JSONL file being written.
type resultFile struct {
	f     *os.File
	w     *bufio.Writer
	lines int
}

func newResultFiles() (*resultFiles, error) {
	out, err := newResultFile("laas-batch-out-*.jsonl")
	if err != nil {
		return nil, err
	}
	errf, err := newResultFile("laas-batch-err-*.jsonl")
	if err != nil {
		out.remove()
		return nil, err
	}
	return &resultFiles{out: out, err: errf}, nil
}

func newResultFile(pattern string) (*resultFile, error) {
	f, err := os.CreateTemp("", pattern)
	if err != nil {
		return nil, err
	}
	return &resultFile{f: f, w: bufio.NewWriter(f)}, nil
}

func (r *resultFile) write(l schema.BatchOutputLine) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	r.lines++
	_, err = r.w.Write(append(data, '\n'))
	return err
}

func (r *resultFile) remove() { r.f.Close(); os.Remove(r.f.Name()) }

// writeOutput writes a completed line.
func (rf *resultFiles) writeOutput(l schema.BatchOutputLine) error {
	rf.completed++
	return rf.out.write(l)
}

// writeError writes a line to the error file, counted as failed or not.
func (rf *resultFiles) writeError(l schema.BatchOutputLine, failed bool) error {
	if failed {
		rf.failed++
	}
	return rf.err.write(l)
}

func (rf *resultFiles) flush() error {
	if err := rf.out.w.Flush(); err != nil {
		return err
	}
	return rf.err.w.Flush()
}

func (rf *resultFiles) remove() { rf.out.remove(); rf.err.remove() }

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
