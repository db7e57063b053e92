package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

var (
	errLeaseHeld = errors.New("batch lease held by another runner")
	errLeaseLost = errors.New("batch lease lost to another runner")
)

// driver is one batch being driven by this runner.
type driver struct {
	r   *Runner
	id  string
	log *slog.Logger

	mu  sync.Mutex
	rec Record // the newest record written or read

	plan  *Plan        // the batch's plan
	input *inputReader // the input file, while progress runs
}

func (r *Runner) drive(ctx context.Context, rec *Record) {
	d := &driver{r: r, id: rec.Batch.ID, rec: *rec, log: r.log.With("batch_id", rec.Batch.ID)}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Renew the lease on its own clock, whatever the batch is busy with.
	go func() {
		t := time.NewTicker(r.cfg.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if err := d.save(ctx, nil); err != nil {
					if errors.Is(err, errLeaseLost) {
						d.log.Warn("batch taken over by another runner")
						cancel()
						return
					}
					if ctx.Err() == nil {
						d.log.Warn("could not renew the batch lease", "error", err)
					}
				}
			}
		}
	}()
	d.log.Info("driving batch", "status", rec.Batch.Status)
	for ctx.Err() == nil {
		var err error
		switch status := d.status(); status {
		case schema.BatchValidating:
			err = d.validate(ctx)
		case schema.BatchInProgress:
			err = d.progress(ctx)
		case schema.BatchFinalizing:
			err = d.end(ctx, d.record().Ending)
		case schema.BatchCancelling:
			err = d.end(ctx, schema.BatchCancelled)
		default:
			dctx, dcancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
			if err := r.store.deactivate(dctx, d.id); err != nil {
				d.log.Warn("could not unmark a finished batch", "error", err)
			}
			_ = r.store.files.Delete(dctx, planName(d.id))
			dcancel()
			d.log.Info("batch done", "status", status)
			return
		}
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, errLeaseLost) {
				d.log.Error("batch step failed; will try again", "error", err)
				// Let the next scan take it again: still our lease.
			}
			return
		}
	}
}

func (d *driver) record() Record {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.rec
}

func (d *driver) status() string { return d.record().Batch.Status }

// save renews the lease and applies mutate (when not nil) to the newest
// record, with compare-and-set. It fails with errLeaseLost when another
// runner owns the batch now.
func (d *driver) save(ctx context.Context, mutate func(*Record)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	rec, err := d.r.store.Update(ctx, d.id, func(rec *Record) error {
		if rec.Owner != d.r.cfg.Owner {
			return errLeaseLost
		}
		if mutate != nil {
			mutate(rec)
		}
		rec.LeaseUntil = time.Now().Add(d.r.cfg.LeaseTTL)
		return nil
	})
	if err != nil {
		return err
	}
	d.rec = *rec
	return nil
}

// validate checks every line, read from the input file one at a time,
// and moves the batch to in_progress (or to failed when its input file
// is gone).
func (d *driver) validate(ctx context.Context) error {
	rec := d.record()
	obj, err := d.r.store.openObject(ctx, rec.Batch.InputFileID)
	if errors.Is(err, ErrNotFound) {
		return d.fail(ctx, "file_not_found", fmt.Sprintf("The input file %s does not exist any more.", rec.Batch.InputFileID))
	}
	if err != nil {
		return err
	}
	// The plan streams into the store as the lines are checked.
	var plan Plan
	err = d.r.store.putObject(ctx, planName(d.id), func(w io.Writer) error {
		var err error
		plan, err = d.r.validator.Plan(ctx, d.id, rec.Creator(), obj, w)
		return err
	})
	_ = obj.Close()
	if err != nil {
		return fmt.Errorf("validate input file %s into the plan: %w", rec.Batch.InputFileID, err)
	}
	d.plan = &plan
	now := time.Now()
	d.log.Info("batch validated", "lines", plan.Total, "valid", len(plan.Valid), "refused", plan.Refused)
	return d.save(ctx, func(r *Record) {
		r.Valid, r.ValidationFailed = len(plan.Valid), plan.Refused
		r.Batch.RequestCounts = schema.BatchRequestCounts{Total: plan.Total, Failed: plan.Refused}
		if r.Batch.Status == schema.BatchValidating {
			r.Batch.Status, r.Batch.InProgressAt = schema.BatchInProgress, unix(now)
		}
	})
}

// fail ends a batch that cannot run at all.
func (d *driver) fail(ctx context.Context, code, msg string) error {
	now := time.Now()
	d.log.Warn("batch failed", "code", code, "error", msg)
	return d.save(ctx, func(r *Record) {
		r.Batch.Status, r.Batch.FailedAt = schema.BatchFailed, unix(now)
		r.Batch.Errors = &schema.BatchErrors{Object: "list", Data: []schema.BatchError{{Code: code, Message: msg}}}
	})
}

// load reads the plan of a batch that was validated. The input file is
// not read here: progress reads each line's body as it queues it.
func (d *driver) load(ctx context.Context) error {
	if d.plan != nil {
		return nil
	}
	plan, err := d.r.store.loadPlan(ctx, d.id)
	if err != nil {
		return fmt.Errorf("read plan: %w", err) // ErrNotFound for a batch never validated
	}
	d.plan = &plan
	return nil
}

// answerStatus reads the status of a kept answer (a schema.Reply).
func answerStatus(v []byte) int {
	var rep struct {
		Status int `json:"status"`
	}
	_ = json.Unmarshal(v, &rep)
	return rep.Status
}

// lineOf parses the line number out of an answer key.
func lineOf(key string) (int, bool) {
	i := strings.LastIndexByte(key, '.')
	n, err := strconv.Atoi(key[i+1:])
	return n, err == nil
}
