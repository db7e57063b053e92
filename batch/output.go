package batch

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Kinds of a valid line's answer, as the first pass of writeFiles finds
// them: which file its line goes to and how it counts.
const (
	kindLost   byte = iota // no answer (the answers bucket's TTL passed): error file, failed
	kindOutput             // a 200: output file, completed
	kindFailed             // any other answer: error file, failed
	kindNotRun             // left unrun by the batch's cancel: error file, not failed
)

// writeFiles writes the output file (answers with status 200) and the
// error file (every other answer, and the lines refused up front), each
// only when it has a line, and returns their ids and the counts.
//
// No temporary file: a first pass over the kept answers sorts each valid
// line into a kind (one byte per line, held in memory with the plan),
// which gives the counts and each file's number of lines, stored as its
// "lines" metadata with the file; then each file streams into the store
// from a second pass over the answers (io.Pipe into Store.PutFile). The
// answers of a finalizing batch no longer change, but should one have
// changed between the passes the file's writer fails, the store keeps no
// part of the file, and the step runs again at the next scan. The files'
// ids are the batch's own: a retried finalization stores the same files
// again, replacing what a failed attempt left.
func (d *driver) writeFiles(ctx context.Context) (out, errFile *string, completed, failed int, err error) {
	kinds, err := d.classify(ctx)
	if err != nil {
		return nil, nil, 0, 0, err
	}
	outLines, errLines := 0, d.plan.Refused
	failed = d.plan.Refused
	for _, k := range kinds {
		switch k {
		case kindOutput:
			outLines++
			completed++
		case kindLost, kindFailed:
			errLines++
			failed++
		case kindNotRun:
			errLines++
		}
	}
	if out, err = d.putResultFile(ctx, "output", outLines, func(w *lineWriter) error {
		return d.writeAnswers(ctx, w, kinds, true)
	}); err != nil {
		return nil, nil, 0, 0, err
	}
	if errFile, err = d.putResultFile(ctx, "error", errLines, func(w *lineWriter) error {
		if err := d.writeAnswers(ctx, w, kinds, false); err != nil {
			return err
		}
		for p, l := range d.plan.Valid {
			if kinds[p] != kindLost {
				continue
			}
			cid := l.CustomID
			if err := w.write(schema.BatchOutputLine{ID: requestLineID(d.id, l.Line), CustomID: &cid,
				Error: &schema.BatchLineError{Code: "answer_lost", Message: "The answer to this request was lost; run it again."}}); err != nil {
				return err
			}
		}
		return d.r.store.eachRefused(ctx, d.id, w.write)
	}); err != nil {
		return nil, nil, 0, 0, err
	}
	return out, errFile, completed, failed, nil
}

// classify is writeFiles' first pass: the kind of each position of
// d.plan.Valid.
func (d *driver) classify(ctx context.Context) ([]byte, error) {
	kinds := make([]byte, len(d.plan.Valid)) // kindLost until an answer is seen
	err := d.eachAnswer(ctx, func(p int, v []byte) error {
		kinds[p] = d.kindOf(p, v)
		return nil
	})
	return kinds, err
}

// kindOf sorts the answer v of position p.
func (d *driver) kindOf(p int, v []byte) byte {
	l, isOutput, notRun := outputLine(d.id, d.plan.Valid[p], v)
	switch {
	case isOutput:
		return kindOutput
	case notRun && l.Error.Code == schema.CodeBatchCancelled:
		// A line the batch's cancel left unrun does not count as failed.
		return kindNotRun
	}
	return kindFailed
}

// writeAnswers writes the answers that go to the output file (output) or
// to the error file, as classify sorted them, once per line. An answer
// whose kind changed since is an error: the file would not hold what was
// counted.
func (d *driver) writeAnswers(ctx context.Context, w *lineWriter, kinds []byte, output bool) error {
	return d.eachAnswer(ctx, func(p int, v []byte) error {
		want := kinds[p]
		if want == kindLost || (want == kindOutput) != output {
			return nil
		}
		if got := d.kindOf(p, v); got != want {
			return fmt.Errorf("the answer of line %d changed while the batch's files were written", d.plan.Valid[p].Line)
		}
		l, _, _ := outputLine(d.id, d.plan.Valid[p], v)
		return w.write(l)
	})
}

// eachAnswer calls fn with every kept answer of the batch's valid lines,
// once per line, and the line's position in d.plan.Valid.
func (d *driver) eachAnswer(ctx context.Context, fn func(p int, v []byte) error) error {
	seen := make([]bool, len(d.plan.Valid))
	wctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	watch, err := d.r.answers.Watch(wctx, "batch."+d.id+".*", jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("read answers: %w", err)
	}
	defer func() { _ = watch.Stop() }()
	for e := range watch.Updates() {
		if e == nil {
			break
		}
		line, ok := lineOf(e.Key())
		if !ok {
			continue
		}
		p, known := d.position(line)
		if !known || seen[p] {
			continue
		}
		seen[p] = true
		if err := fn(p, e.Value()); err != nil {
			return err
		}
	}
	return wctx.Err()
}

// position finds line in d.plan.Valid, which is in file order.
func (d *driver) position(line int) (int, bool) {
	return slices.BinarySearchFunc(d.plan.Valid, line, func(l PlanLine, line int) int { return cmp.Compare(l.Line, line) })
}

// putResultFile stores the file of kind ("output" or "error") when it has
// a line and returns its id; nil when it has none. write streams the
// file's lines into the store; it must write exactly lines of them, or
// nothing is stored. The file belongs to the batch's owner.
func (d *driver) putResultFile(ctx context.Context, kind string, lines int, write func(*lineWriter) error) (*string, error) {
	if lines == 0 {
		return nil, nil
	}
	id := "file-" + strings.TrimPrefix(d.id, "batch_") + "-" + kind
	pr, pw := io.Pipe()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		w := &lineWriter{w: bufio.NewWriterSize(pw, 64<<10)}
		err := write(w)
		if err == nil {
			err = w.w.Flush()
		}
		if err == nil && w.lines != lines {
			err = fmt.Errorf("%s file: %d lines written, %d counted", kind, w.lines, lines)
		}
		// nil: the reader sees io.EOF, the end of the file. An error
		// fails the store's Put, which then keeps no part of the file.
		_ = pw.CloseWithError(err)
	}()
	_, err := d.r.store.PutFile(ctx, id, d.record().CreatedBy, d.id+"_"+kind+".jsonl", schema.PurposeBatchOutput, lines, pr)
	_ = pr.CloseWithError(errors.New("the store stopped reading")) // ends a writer still writing
	<-wrote
	if err != nil {
		return nil, fmt.Errorf("store %s file: %w", kind, err)
	}
	return &id, nil
}

// lineWriter writes a JSONL file's lines, counting them.
type lineWriter struct {
	w     *bufio.Writer
	lines int
}

func (w *lineWriter) write(l schema.BatchOutputLine) error {
	data, err := json.Marshal(l)
	if err != nil {
		return err
	}
	w.lines++
	_, err = w.w.Write(append(data, '\n'))
	return err
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
