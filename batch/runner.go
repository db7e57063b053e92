package batch

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/schema"
)

// RunnerConfig configures a Runner.
type RunnerConfig struct {
	// Owner names this runner in leases; default a random NUID.
	Owner string
	// LeaseTTL is how long a batch stays with a runner that stopped
	// renewing its lease (it renews every third of it); default 15s.
	LeaseTTL time.Duration
	// ScanInterval is how often the runner looks for batches to drive;
	// default 2s.
	ScanInterval time.Duration
	// SaveInterval is how often a running batch's counts and progress are
	// written; default 1s.
	SaveInterval time.Duration
	// Window is the most lines of one batch queued and not yet answered;
	// default 1000.
	Window int
}

func (c *RunnerConfig) setDefaults() {
	if c.Owner == "" {
		c.Owner = nuid.Next()
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = 15 * time.Second
	}
	if c.ScanInterval == 0 {
		c.ScanInterval = 2 * time.Second
	}
	if c.SaveInterval == 0 {
		c.SaveInterval = time.Second
	}
	if c.Window == 0 {
		c.Window = 1000
	}
}

// Validate reports every invalid field at once.
func (c RunnerConfig) Validate() error {
	var errs []error
	if c.LeaseTTL < time.Second {
		errs = append(errs, fmt.Errorf("batch lease TTL must be at least 1s, got %s", c.LeaseTTL))
	}
	if c.ScanInterval <= 0 || c.SaveInterval <= 0 {
		errs = append(errs, errors.New("batch scan and save intervals must be positive"))
	}
	if c.Window < 1 {
		errs = append(errs, fmt.Errorf("batch window must be positive, got %d", c.Window))
	}
	return errors.Join(errs...)
}

// Runner drives batches: validates their lines, queues them, collects the
// answers, writes the output and error files. Every gateway runs one; see
// the package doc for how they share the work.
type Runner struct {
	cfg       RunnerConfig
	js        jetstream.JetStream
	nc        *nats.Conn
	store     *Store
	answers   jetstream.KeyValue
	core      *admission.Core
	validator Validator
	log       *slog.Logger

	mu      sync.Mutex
	running map[string]bool
	wg      sync.WaitGroup
}

// NewRunner builds a runner; the queue's streams and buckets must exist.
func NewRunner(cfg RunnerConfig, js jetstream.JetStream, store *Store, core *admission.Core, log *slog.Logger) (*Runner, error) {
	cfg.setDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	answers, err := js.KeyValue(ctx, schema.BucketAnswers)
	if err != nil {
		return nil, fmt.Errorf("answers bucket %s: %w", schema.BucketAnswers, err)
	}
	nc := js.Conn()
	return &Runner{
		cfg: cfg, js: js, nc: nc, store: store, answers: answers, core: core,
		validator: Validator{Core: core},
		log:       log.With("batch_runner", cfg.Owner),
		running:   map[string]bool{},
	}, nil
}

// Run drives batches until ctx is done, then waits for the batches it was
// driving to stop (their leases lapse and another runner takes them).
func (r *Runner) Run(ctx context.Context) error {
	t := time.NewTicker(r.cfg.ScanInterval)
	defer t.Stop()
	for {
		r.scan(ctx)
		select {
		case <-ctx.Done():
			r.wg.Wait()
			return nil
		case <-t.C:
		}
	}
}

// scan takes every active batch that has no live owner.
func (r *Runner) scan(ctx context.Context) {
	ids, err := r.store.activeIDs(ctx)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		if ctx.Err() == nil {
			r.log.Warn("could not list active batches", "error", err)
		}
		return
	}
	for id, markedAt := range ids {
		r.mu.Lock()
		busy := r.running[id]
		r.mu.Unlock()
		if busy {
			continue
		}
		rec, err := r.store.Update(ctx, id, func(rec *Record) error {
			if schema.BatchDone(rec.Batch.Status) {
				return errUnchanged
			}
			if rec.Owner != r.cfg.Owner && rec.Owner != "" && time.Now().Before(rec.LeaseUntil) {
				return errLeaseHeld
			}
			rec.Owner, rec.LeaseUntil = r.cfg.Owner, time.Now().Add(r.cfg.LeaseTTL)
			return nil
		})
		switch {
		case errors.Is(err, ErrNotFound):
			// A marker whose record was never written (its gateway died
			// between the two): remove it once it is clearly stale.
			if time.Since(markedAt) > time.Minute {
				_ = r.store.deactivate(ctx, id)
			}
			continue
		case IsUnchanged(err):
			_ = r.store.deactivate(ctx, id)
			continue
		case errors.Is(err, errLeaseHeld):
			continue
		case err != nil:
			if ctx.Err() == nil {
				r.log.Warn("could not take a batch", "batch_id", id, "error", err)
			}
			continue
		}
		r.mu.Lock()
		r.running[id] = true
		r.mu.Unlock()
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			defer func() { r.mu.Lock(); delete(r.running, id); r.mu.Unlock() }()
			r.drive(ctx, rec)
		}()
	}
}

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

	plan  *Plan
	lines [][]byte // the input file's lines
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
			_ = r.store.files.Delete(dctx, d.id+".plan")
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

// validate checks every line and moves the batch to in_progress (or to
// failed when its input file is gone).
func (d *driver) validate(ctx context.Context) error {
	rec := d.record()
	data, err := d.r.store.readAll(ctx, rec.Batch.InputFileID)
	if errors.Is(err, ErrNotFound) {
		return d.fail(ctx, "file_not_found", fmt.Sprintf("The input file %s does not exist any more.", rec.Batch.InputFileID))
	}
	if err != nil {
		return err
	}
	plan := d.r.validator.Plan(ctx, d.id, data)
	planData, err := json.Marshal(plan)
	if err != nil {
		return err
	}
	if _, err := d.r.store.files.PutBytes(ctx, d.id+".plan", planData); err != nil {
		return fmt.Errorf("store plan: %w", err)
	}
	d.plan, d.lines = &plan, splitLines(data)
	now := time.Now()
	d.log.Info("batch validated", "lines", plan.Total, "valid", len(plan.Valid), "refused", len(plan.Errors))
	return d.save(ctx, func(r *Record) {
		r.Valid, r.ValidationFailed = len(plan.Valid), len(plan.Errors)
		r.Batch.RequestCounts = schema.BatchRequestCounts{Total: plan.Total, Failed: len(plan.Errors)}
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

// load reads the plan and the input file of a batch that was validated.
func (d *driver) load(ctx context.Context) error {
	if d.plan != nil {
		return nil
	}
	rec := d.record()
	planData, err := d.r.store.readAll(ctx, d.id+".plan")
	if err != nil {
		return fmt.Errorf("read plan: %w", err) // ErrNotFound for a batch never validated
	}
	var plan Plan
	if err := json.Unmarshal(planData, &plan); err != nil {
		return fmt.Errorf("decode plan: %w", err)
	}
	data, err := d.r.store.readAll(ctx, rec.Batch.InputFileID)
	if errors.Is(err, ErrNotFound) && rec.Published >= len(plan.Valid) {
		data = nil // every line is queued already: the bodies are not needed
	} else if err != nil {
		return fmt.Errorf("read input file %s: %w", rec.Batch.InputFileID, err)
	}
	d.plan, d.lines = &plan, splitLines(data)
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

// progress queues the lines and counts the answers until every line is
// answered, the batch expires, or it is cancelled.
func (d *driver) progress(ctx context.Context) error {
	if err := d.load(ctx); err != nil {
		return err
	}
	rec := d.record()
	valid := d.plan.Valid
	pos := make(map[int]int, len(valid)) // line -> position in valid
	for i, l := range valid {
		pos[l.Line] = i
	}
	w, err := d.r.answers.Watch(ctx, "batch."+d.id+".*", jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("watch answers: %w", err)
	}
	defer func() { _ = w.Stop() }()

	answered := make([]bool, len(valid))
	var done, completed, failed, answeredBelow int
	cursor := min(rec.Published, len(valid))
	initial := true
	var pauseUntil time.Time
	expires := time.Unix(*rec.Batch.ExpiresAt, 0)
	saveCounts := func() error {
		c := cursor
		return d.save(ctx, func(r *Record) {
			r.Published = max(r.Published, c)
			r.Batch.RequestCounts.Completed = completed
			r.Batch.RequestCounts.Failed = r.ValidationFailed + failed
		})
	}
	handle := func(e jetstream.KeyValueEntry) {
		line, ok := lineOf(e.Key())
		p, known := pos[line]
		if !ok || !known || answered[p] {
			return
		}
		answered[p] = true
		done++
		if answerStatus(e.Value()) == 200 {
			completed++
		} else {
			failed++
		}
		if p < cursor {
			answeredBelow++
		}
	}
	tick := time.NewTicker(d.r.cfg.SaveInterval)
	defer tick.Stop()
	for {
		if !initial && done == len(valid) {
			if err := saveCounts(); err != nil {
				return err
			}
			return d.toFinalizing(ctx, schema.BatchCompleted)
		}
		if time.Now().After(expires) {
			if err := saveCounts(); err != nil {
				return err
			}
			return d.toFinalizing(ctx, schema.BatchExpired)
		}
		if d.status() != schema.BatchInProgress {
			return saveCounts()
		}
		canPublish := !initial && cursor < len(valid) && cursor-answeredBelow < d.r.cfg.Window && time.Now().After(pauseUntil)
		if canPublish {
			// Queue a few lines, then look at answers again.
			for n := 0; n < 64 && cursor < len(valid) && cursor-answeredBelow < d.r.cfg.Window; n++ {
				if answered[cursor] { // answered before a restart: never queued again
					answeredBelow++
					cursor++
					continue
				}
				if err := d.publish(ctx, valid[cursor], expires); err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					d.log.Warn("could not queue a batch line; trying again shortly", "line", valid[cursor].Line, "error", err)
					pauseUntil = time.Now().Add(time.Second)
					break
				}
				cursor++
			}
		}
		var timer <-chan time.Time
		if !canPublish && time.Now().Before(pauseUntil) {
			timer = time.After(time.Until(pauseUntil))
		}
		select {
		case e := <-w.Updates():
			if e == nil {
				initial = false
			} else {
				handle(e)
			}
		case <-tick.C:
			if err := saveCounts(); err != nil {
				return err
			}
		case <-timer:
		case <-ctx.Done():
			return ctx.Err()
		default:
			if canPublish {
				continue
			}
			select {
			case e := <-w.Updates():
				if e == nil {
					initial = false
				} else {
					handle(e)
				}
			case <-tick.C:
				if err := saveCounts(); err != nil {
					return err
				}
			case <-timer:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// publish queues one line on the batch lane through the admission core;
// its media were checked when the plan was made.
func (d *driver) publish(ctx context.Context, l PlanLine, deadline time.Time) error {
	if l.Line >= len(d.lines) {
		return fmt.Errorf("line %d is not in the input file", l.Line)
	}
	body, err := lineBody(d.lines[l.Line])
	if err != nil {
		return err
	}
	left := time.Until(deadline)
	if left <= 0 {
		return fmt.Errorf("line %d: the batch passed its deadline", l.Line)
	}
	req := lineRequest(d.id, l.Line, body)
	req.Timeout, req.MediaChecked = min(left, schema.MaxRequestTimeout), true
	ck, err := d.r.core.Check(req)
	if err == nil {
		_, err = d.r.core.Admit(ctx, ck)
	}
	if e, ok := errors.AsType[*schema.Error](err); ok && refusal(e) {
		// Refused now although the plan took it (say its model left the
		// catalogue): the refusal is the line's answer.
		return d.keepRefusal(ctx, l, req.ID, e)
	}
	return err
}

// refusal reports an error that trying again will not change.
func refusal(e *schema.Error) bool {
	return e.Status >= 400 && e.Status < 500 && e.Status != http.StatusTooManyRequests && e.Status != admission.StatusClientClosed
}

// keepRefusal stores a refused line's error as its answer.
func (d *driver) keepRefusal(ctx context.Context, l PlanLine, id string, e *schema.Error) error {
	rep := schema.ErrorReply(id, e)
	data, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	d.log.Warn("batch line refused at queueing", "line", l.Line, "status", e.Status, "code", e.Code)
	_, err = d.r.answers.Put(ctx, AnswerKey(d.id, l.Line), data)
	return err
}

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
			_ = d.r.nc.Publish(schema.SubjectCancel+"."+jobID, nil)
		}
	}
	return nil
}

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
