package batch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// The stored plan ("<batch id>.plan" in the files bucket) is JSONL, one
// planEntry a line, in file order: {"v": PlanLine} for a line to run,
// {"e": BatchOutputLine} for a line refused up front, and last
// {"total": n, "refused": m, "max_line": l}. It is written as validation goes and read
// one entry at a time, so neither holds more than an entry of it besides
// the Plan. An entry is bounded whatever the input: a custom_id of at
// most MaxCustomIDBytes, a model of the catalogue's, a message of at most
// maxRefusalBytes; in JSON (control characters escaped as \u00XX, six
// bytes for one) under maxPlanEntryBytes. So a plan is at most
// schema.MaxBatchLines x maxPlanEntryBytes, whatever the input file's size.
type planEntry struct {
	Valid   *PlanLine               `json:"v,omitempty"`
	Refused *schema.BatchOutputLine `json:"e,omitempty"`
	Total   *int                    `json:"total,omitempty"`
	Counted int                     `json:"refused,omitempty"`
	MaxLine int                     `json:"max_line,omitempty"`

	// A plan stored before plans were streamed is one object
	// {"valid": [...], "errors": [...], "total": n}; it is read whole.
	OldValid  []PlanLine               `json:"valid,omitempty"`
	OldErrors []schema.BatchOutputLine `json:"errors,omitempty"`
}

// maxPlanEntryBytes bounds one stored plan entry (see planEntry).
const maxPlanEntryBytes = 8 << 10

// planWriter writes a plan's entries.
type planWriter struct {
	bw  *bufio.Writer
	enc *json.Encoder
}

func newPlanWriter(w io.Writer) *planWriter {
	bw := bufio.NewWriterSize(w, 64<<10)
	return &planWriter{bw: bw, enc: json.NewEncoder(bw)}
}

func (w *planWriter) valid(l PlanLine) error { return w.enc.Encode(planEntry{Valid: &l}) }

func (w *planWriter) refused(l schema.BatchOutputLine) error {
	return w.enc.Encode(planEntry{Refused: &l})
}

// end writes the counts and flushes.
func (w *planWriter) end(p Plan) error {
	total := p.Total
	if err := w.enc.Encode(planEntry{Total: &total, Counted: p.Refused, MaxLine: p.MaxLine}); err != nil {
		return err
	}
	return w.bw.Flush()
}

// planName is the object that keeps batch id's plan.
func planName(id string) string { return id + ".plan" }

// putObject stores the object name of the files bucket from what write
// writes, streamed (no copy of it is held); when write fails, the store
// keeps no part of it.
func (s *Store) putObject(ctx context.Context, name string, write func(io.Writer) error) error {
	pr, pw := io.Pipe()
	wrote := make(chan struct{})
	go func() {
		defer close(wrote)
		// nil: the reader sees io.EOF. An error fails the Put.
		_ = pw.CloseWithError(write(pw))
	}()
	_, err := s.files.Put(ctx, jetstream.ObjectMeta{Name: name}, pr)
	_ = pr.CloseWithError(errors.New("the store stopped reading")) // ends a writer still writing
	<-wrote
	return err
}

// eachPlanEntry calls fn with the entries of batch id's stored plan, in
// order, reading one at a time. ErrNotFound when the batch has no plan.
func (s *Store) eachPlanEntry(ctx context.Context, id string, fn func(planEntry) error) error {
	obj, err := s.openObject(ctx, planName(id))
	if err != nil {
		return err
	}
	defer func() { _ = obj.Close() }()
	dec := json.NewDecoder(bufio.NewReaderSize(obj, 64<<10))
	ended := false
	for {
		var e planEntry
		err := dec.Decode(&e)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("decode plan: %w", err)
		}
		ended = ended || e.Total != nil
		if err := fn(e); err != nil {
			return err
		}
	}
	if !ended {
		return errors.New("decode plan: the plan has no counts; it was cut")
	}
	return nil
}

// loadPlan reads batch id's stored plan: the lines to run and the counts;
// the refused lines' errors are left in the store (see eachRefused).
func (s *Store) loadPlan(ctx context.Context, id string) (Plan, error) {
	var p Plan
	err := s.eachPlanEntry(ctx, id, func(e planEntry) error {
		switch {
		case e.Valid != nil:
			p.Valid = append(p.Valid, *e.Valid)
		case e.Total != nil:
			p.Total, p.Refused, p.MaxLine = *e.Total, e.Counted+len(e.OldErrors), e.MaxLine
			p.Valid = append(p.Valid, e.OldValid...)
		}
		return nil
	})
	if err != nil {
		return Plan{}, err
	}
	return p, nil
}

// eachRefused calls fn with the error line of every line of batch id's
// stored plan that was refused up front, in file order.
func (s *Store) eachRefused(ctx context.Context, id string, fn func(schema.BatchOutputLine) error) error {
	return s.eachPlanEntry(ctx, id, func(e planEntry) error {
		if e.Refused != nil {
			return fn(*e.Refused)
		}
		for _, l := range e.OldErrors {
			if err := fn(l); err != nil {
				return err
			}
		}
		return nil
	})
}
