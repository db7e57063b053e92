package batch

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

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

// publish queues one line on the batch lane.
func (d *driver) publish(ctx context.Context, l PlanLine, deadline time.Time) error {
	if l.Line >= len(d.lines) {
		return fmt.Errorf("line %d is not in the input file", l.Line)
	}
	body, err := lineBody(d.lines[l.Line])
	if err != nil {
		return err
	}
	id := JobID(d.id, l.Line)
	env := schema.Envelope{ID: id, Model: l.Model, EnqueuedAt: time.Now(), Deadline: deadline, Request: body, IdempotencyKey: AnswerKey(d.id, l.Line)}
	if len(body) > d.r.inlineMax {
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		_, err := d.r.bodies.PutBytes(pctx, id, body)
		cancel()
		if err != nil {
			return fmt.Errorf("store large body: %w", err)
		}
		env.Request, env.RequestRef = nil, id
	}
	data, err := json.Marshal(env)
	if err != nil {
		return err
	}
	msg := &nats.Msg{Subject: schema.SubjectBatch, Data: data, Header: nats.Header{}}
	msg.Header.Set(schema.HeaderMsgID, id)
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_, err = d.r.js.PublishMsg(pctx, msg)
	return err
}
