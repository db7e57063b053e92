package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// toFinalizing moves a running batch to finalizing, heading for ending.
func (d *driver) toFinalizing(ctx context.Context, ending string) error {
	now := time.Now()
	d.log.Info("batch finalizing", "ending", ending)
	return d.save(ctx, func(r *Record) {
		if r.Batch.Status == schema.BatchInProgress {
			r.Batch.Status, r.Batch.FinalizingAt, r.Ending = schema.BatchFinalizing, unix(now), ending
		}
	})
}

// end finishes a batch: for an expired or cancelled one, every line not
// answered yet gets a batch_expired or batch_cancelled answer (so a worker
// that takes its job later skips it) and its call in flight is
// cancelled; then the output and error files are written.
func (d *driver) end(ctx context.Context, ending string) error {
	if err := d.load(ctx); errors.Is(err, ErrNotFound) && ending == schema.BatchCancelled {
		// Cancelled before its lines were validated: nothing ran.
		now := time.Now()
		return d.save(ctx, func(r *Record) { r.Batch.Status, r.Batch.CancelledAt = schema.BatchCancelled, unix(now) })
	} else if err != nil {
		return err
	}
	if ending == "" {
		ending = schema.BatchCompleted
	}
	rec := d.record()
	if ending != schema.BatchCompleted {
		if err := d.markUnanswered(ctx, ending, rec.Published); err != nil {
			return err
		}
	}
	out, errFile, completed, failed, err := d.writeFiles(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	err = d.save(ctx, func(r *Record) {
		r.Batch.OutputFileID, r.Batch.ErrorFileID = out, errFile
		r.Batch.RequestCounts.Completed, r.Batch.RequestCounts.Failed = completed, failed
		switch ending {
		case schema.BatchCompleted:
			r.Batch.CompletedAt = unix(now)
		case schema.BatchExpired:
			r.Batch.ExpiredAt = unix(now)
		case schema.BatchCancelled:
			r.Batch.CancelledAt = unix(now)
		}
		r.Batch.Status = ending
	})
	if err == nil {
		d.log.Info("batch finished", "status", ending, "completed", completed, "failed", failed)
	}
	return err
}

// markUnanswered gives every line without an answer the answer "not run"
// (schema.CodeBatchExpired or CodeBatchCancelled), with Create so a real
// answer is never replaced, and cancels the queued ones.
func (d *driver) markUnanswered(ctx context.Context, ending string, published int) error {
	code, msg := schema.CodeBatchCancelled, "The batch was cancelled before this request ran."
	if ending == schema.BatchExpired {
		code, msg = schema.CodeBatchExpired, "This request could not be run before the batch's completion window ended."
	}
	// Every line's deadline is at most the batch's expiry: workers forget
	// the cancelled ids then.
	var deadline time.Time
	if exp := d.record().Batch.ExpiresAt; exp != nil {
		deadline = time.Unix(*exp, 0)
	}
	have := map[string]bool{}
	if lister, err := d.r.answers.ListKeysFiltered(ctx, "batch."+d.id+".*"); err == nil {
		for k := range lister.Keys() {
			have[k] = true
		}
	} else if !errors.Is(err, jetstream.ErrNoKeysFound) {
		return fmt.Errorf("list answers: %w", err)
	}
	for i, l := range d.plan.Valid {
		key := AnswerKey(d.id, l.Line)
		if have[key] {
			continue
		}
		jobID := JobID(d.id, l.Line)
		c := code
		rep := schema.Reply{ID: jobID, Error: &schema.ErrorDetail{Message: msg, Type: schema.TypeInvalidRequest, Code: &c}}
		data, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		if _, err := d.r.answers.Create(ctx, key, data); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("mark line %d: %w", l.Line, err)
		}
		if i < published {
			_ = d.r.nc.Publish(schema.SubjectCancel+"."+jobID, schema.CancelPayload(deadline))
		}
	}
	return nil
}
