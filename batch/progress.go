package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/schema"
)

// progress queues the lines and counts the answers until every line is
// answered, the batch expires, or it is cancelled.
func (d *driver) progress(ctx context.Context) error {
	if err := d.load(ctx); err != nil {
		return err
	}
	w, err := d.r.answers.Watch(ctx, "batch."+d.id+".*", jetstream.IgnoreDeletes())
	if err != nil {
		return fmt.Errorf("watch answers: %w", err)
	}
	defer func() { _ = w.Stop() }()
	t := newTally(d)
	// The input file is read as the cursor moves, never whole; the lines
	// the plan took are read whole, though this runner's own limit may be
	// lower than the one that made the plan.
	d.input = &inputReader{store: d.r.store, fileID: d.record().Batch.InputFileID, max: max(d.plan.MaxLine, d.r.validator.maxLine())}
	defer func() { d.input.close(); d.input = nil }()
	tick := time.NewTicker(d.r.cfg.SaveInterval)
	defer tick.Stop()
	for {
		if !t.initial && t.done == len(t.valid) {
			if err := t.saveCounts(ctx); err != nil {
				return err
			}
			return d.toFinalizing(ctx, schema.BatchCompleted)
		}
		if time.Now().After(t.expires) {
			if err := t.saveCounts(ctx); err != nil {
				return err
			}
			return d.toFinalizing(ctx, schema.BatchExpired)
		}
		if d.status() != schema.BatchInProgress {
			return t.saveCounts(ctx)
		}
		canPublish := t.canPublish()
		if canPublish {
			if err := t.publishSome(ctx); err != nil {
				return err
			}
		}
		var timer <-chan time.Time
		if !canPublish && time.Now().Before(t.pauseUntil) {
			timer = time.After(time.Until(t.pauseUntil))
		}
		// While lines can be queued, only take what is ready; else wait.
		if err := t.next(ctx, w.Updates(), tick.C, timer, !canPublish); err != nil {
			return err
		}
	}
}

// tally is the state of progress: which valid lines have an answer, how
// they ended, and how far queuing got.
type tally struct {
	d       *driver
	valid   []PlanLine
	pos     map[int]int // line -> position in valid
	expires time.Time

	answered                               []bool
	done, completed, failed, answeredBelow int
	cursor                                 int  // the next position in valid to queue
	initial                                bool // the watcher has not yet delivered every kept answer
	pauseUntil                             time.Time
}

func newTally(d *driver) *tally {
	rec := d.record()
	valid := d.plan.Valid
	t := &tally{d: d, valid: valid, pos: make(map[int]int, len(valid)), expires: time.Unix(*rec.Batch.ExpiresAt, 0),
		answered: make([]bool, len(valid)), cursor: min(rec.Published, len(valid)), initial: true}
	for i, l := range valid {
		t.pos[l.Line] = i
	}
	return t
}

// saveCounts records how far queuing got and the counts so far.
func (t *tally) saveCounts(ctx context.Context) error {
	c, completed, failed := t.cursor, t.completed, t.failed
	return t.d.save(ctx, func(r *Record) {
		r.Published = max(r.Published, c)
		r.Batch.RequestCounts.Completed = completed
		r.Batch.RequestCounts.Failed = r.ValidationFailed + failed
	})
}

// handle counts an answer, once per line.
func (t *tally) handle(e jetstream.KeyValueEntry) {
	line, ok := lineOf(e.Key())
	p, known := t.pos[line]
	if !ok || !known || t.answered[p] {
		return
	}
	t.answered[p] = true
	t.done++
	if answerStatus(e.Value()) == 200 {
		t.completed++
	} else {
		t.failed++
	}
	if p < t.cursor {
		t.answeredBelow++
	}
}

// canPublish reports whether a line may be queued now: every kept answer
// is known, lines are left, the window has room and no pause is on.
func (t *tally) canPublish() bool {
	return !t.initial && t.cursor < len(t.valid) && t.inWindow() && time.Now().After(t.pauseUntil)
}

func (t *tally) inWindow() bool { return t.cursor-t.answeredBelow < t.d.r.cfg.Window }

// publishSome queues a few lines, then lets the caller look at answers
// again. A line that cannot be queued pauses queuing for a second.
func (t *tally) publishSome(ctx context.Context) error {
	for n := 0; n < 64 && t.cursor < len(t.valid) && t.inWindow(); n++ {
		if t.answered[t.cursor] { // answered before a restart: never queued again
			t.answeredBelow++
			t.cursor++
			continue
		}
		if err := t.d.publish(ctx, t.valid[t.cursor], t.expires); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if errors.Is(err, ErrNotFound) {
				return t.inputGone(ctx)
			}
			t.d.log.Warn("could not queue a batch line; trying again shortly", "line", t.valid[t.cursor].Line, "error", err)
			t.pauseUntil = time.Now().Add(time.Second)
			return nil
		}
		t.cursor++
	}
	return nil
}

// next handles one event: an answer (nil: the watcher's initial values are
// all in), a tick (save the counts), the end of a pause, or ctx's end.
// Without block it returns at once when none is ready.
func (t *tally) next(ctx context.Context, updates <-chan jetstream.KeyValueEntry, tick, timer <-chan time.Time, block bool) error {
	if !block {
		select {
		case e := <-updates:
			t.update(e)
		case <-tick:
			return t.saveCounts(ctx)
		case <-timer:
		case <-ctx.Done():
			return ctx.Err()
		default:
		}
		return nil
	}
	select {
	case e := <-updates:
		t.update(e)
	case <-tick:
		return t.saveCounts(ctx)
	case <-timer:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

func (t *tally) update(e jetstream.KeyValueEntry) {
	if e == nil {
		t.initial = false
		return
	}
	t.handle(e)
}

// publish queues one line on the batch lane through the admission core;
// its media were checked when the plan was made.
func (d *driver) publish(ctx context.Context, l PlanLine, deadline time.Time) error {
	raw, err := d.input.line(ctx, l.Line)
	if errors.Is(err, errLineTooLong) {
		// A plan stored before it kept its limit, made by a runner
		// with a higher one: the line is this runner's refusal, not a
		// read to try again until the batch expires.
		e := lineTooLong(d.input.max)
		e.Message = fmt.Sprintf("Line %d: %s", l.Line+1, e.Message)
		return d.keepRefusal(ctx, l, JobID(d.id, l.Line), e)
	}
	if err != nil {
		return err
	}
	body, err := lineBody(raw)
	if err != nil {
		// The plan took the line, so the file under it is not the one
		// validated: nothing read again will change that.
		return d.keepRefusal(ctx, l, JobID(d.id, l.Line), schema.Invalid("", schema.CodeInvalidJSON, "Line %d is no longer a JSON batch line: %s.", l.Line+1, clip(err.Error(), maxEchoBytes)))
	}
	left := time.Until(deadline)
	if left <= 0 {
		return fmt.Errorf("line %d: the batch passed its deadline", l.Line)
	}
	req := lineRequest(d.id, l.Line, body, d.record().Creator())
	req.Timeout, req.MediaChecked = min(left, schema.MaxRequestTimeout), true
	req.Line.Traceparent = d.record().Traceparent
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

// CodeInputFileDeleted is the error of a batch line that was never queued
// because the batch's input file was deleted first.
const CodeInputFileDeleted = "file_not_found"

// inputGone ends queuing when the input file was deleted while lines were
// left to queue: each of them not answered yet gets the answer
// CodeInputFileDeleted (with Create, so a real answer is never replaced),
// and the batch then ends as usual, completed, once the lines queued
// before are answered; their answers stay in the output file. Failing the
// batch instead would throw those answers away: an OpenAI Batch API
// caller gets an error line for what could not run and keeps what ran.
func (t *tally) inputGone(ctx context.Context) error {
	code := CodeInputFileDeleted
	t.d.log.Warn("the batch's input file was deleted; the lines not queued yet fail", "lines", len(t.valid)-t.cursor)
	for p := t.cursor; p < len(t.valid); p++ {
		if t.answered[p] {
			continue
		}
		l := t.valid[p]
		rep := schema.Reply{ID: JobID(t.d.id, l.Line), Error: &schema.ErrorDetail{
			Message: "The batch's input file was deleted before this request was queued.", Type: schema.TypeInvalidRequest, Code: &code}}
		data, err := json.Marshal(rep)
		if err != nil {
			return err
		}
		if _, err := t.d.r.answers.Create(ctx, AnswerKey(t.d.id, l.Line), data); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
			return fmt.Errorf("mark line %d: %w", l.Line, err)
		}
	}
	// Every line is answered or marked: nothing is left to queue. The
	// marks reach handle through the watcher, counted as answered below
	// the cursor.
	t.cursor = len(t.valid)
	return nil
}
