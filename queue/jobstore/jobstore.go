// Package jobstore keeps the state and results of jobs (requests nobody
// waits for on a connection) in JetStream: states in schema.BucketJobs,
// results on schema.StreamResults. Producers (the gateway's jobs API, batch
// tools) and workers share it; queue.Ensure provisions what it uses.
package jobstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue/failover"
	"github.com/laas-bridge/laas-bridge/schema"
)

// ErrNotFound means no job with that id is known: never submitted, or
// its state and result are past their retention.
var ErrNotFound = errors.New("job not found")

// Store is the job store shared by producers (the gateway, the batch
// tools) and workers: states in schema.BucketJobs, results on
// schema.StreamResults, completions too large for a message in
// schema.BucketBodies. Create it with Open; safe for concurrent use.
type Store struct {
	js      jetstream.JetStream
	kv      jetstream.KeyValue
	results jetstream.Stream
	bodies  jetstream.ObjectStore
}

// Open opens the job store; queue.Ensure must have provisioned it.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	kv, err := js.KeyValue(ctx, schema.BucketJobs)
	if err != nil {
		return nil, fmt.Errorf("jobs bucket %s: %w", schema.BucketJobs, err)
	}
	results, err := js.Stream(ctx, schema.StreamResults)
	if err != nil {
		return nil, fmt.Errorf("results stream %s: %w", schema.StreamResults, err)
	}
	bodies, err := js.ObjectStore(ctx, schema.BucketBodies)
	if err != nil {
		return nil, fmt.Errorf("large-body store %s: %w", schema.BucketBodies, err)
	}
	return &Store{js: js, kv: kv, results: results, bodies: bodies}, nil
}

// Check reports what is wrong with env as a job, or nil.
func Check(env *schema.Envelope) error {
	if !schema.ValidRequestID(env.ID) {
		return fmt.Errorf("job id %q is not 1-64 of [A-Za-z0-9_-]", env.ID)
	}
	if env.ResultsSubject != "" && !schema.ValidResultsSubject(env.ResultsSubject, env.ID) {
		return fmt.Errorf("results subject %q is not %s.<id> or %s.<tokens>.<id>", env.ResultsSubject, schema.SubjectResults, schema.SubjectResults)
	}
	return nil
}

// Submit hands env to the bridge as a job, as a direct producer does: it
// records the job queued, then publishes env on schema.SubjectSubmit with
// Nats-Msg-Id set to the job id, where the bridge's admission door checks
// it and queues it (a refusal becomes the job's failed result). env.Job is
// set here. A job id already known is not submitted again: Submit returns
// its state and known=true. Publish errors are returned as they are; the
// queued state is then removed.
func (j *Store) Submit(ctx context.Context, env *schema.Envelope) (st schema.JobState, known bool, err error) {
	env.Job = true
	if st, known, err = j.Record(ctx, env); err != nil || known {
		return st, known, err
	}
	body, err := json.Marshal(env)
	if err != nil {
		return st, false, err
	}
	msg := &nats.Msg{Subject: schema.SubjectSubmit, Data: body, Header: nats.Header{}}
	msg.Header.Set(schema.HeaderMsgID, env.ID)
	if _, err := j.js.PublishMsg(ctx, msg); err != nil {
		j.Forget(context.WithoutCancel(ctx), env.ID)
		return st, false, err
	}
	return st, false, nil
}

// Record records job env queued and returns its state. A job id already
// known is left as it is: Record returns its state and known=true.
func (j *Store) Record(ctx context.Context, env *schema.Envelope) (st schema.JobState, known bool, err error) {
	if err := Check(env); err != nil {
		return st, false, err
	}
	st = schema.JobState{ID: env.ID, Status: schema.JobQueued, Model: env.Model, ResultsSubject: env.ResultsTo(),
		CreatedAt: env.EnqueuedAt.UTC(), UpdatedAt: time.Now().UTC(), Owner: env.Owner}
	data, _ := json.Marshal(st)
	// Retried across a leader election of the bucket's stream, as a
	// publish is.
	timedOut, err := failover.Retry(ctx, failover.Attempt, func(ctx context.Context) error {
		_, err := j.kv.Create(ctx, env.ID, data)
		return err
	})
	switch {
	case err == nil:
		return st, false, nil
	case errors.Is(err, jetstream.ErrKeyExists):
		old, _, gerr := j.state(ctx, env.ID)
		// An attempt whose answer was lost may have stored this very state.
		own := timedOut && gerr == nil && old.Status == schema.JobQueued && old.CreatedAt.Equal(st.CreatedAt)
		return old, !own, gerr
	}
	return st, false, fmt.Errorf("record job %s: %w", env.ID, err)
}

// Forget removes the queued state Record wrote for a job that was then not
// queued. It waits at most 5 s and reports nothing: the state's TTL ends a
// state it could not remove.
func (j *Store) Forget(ctx context.Context, id string) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = j.kv.Delete(ctx, id)
}

// state reads id's entry in the jobs bucket.
func (j *Store) state(ctx context.Context, id string) (schema.JobState, uint64, error) {
	var st schema.JobState
	e, err := j.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return st, 0, ErrNotFound
	}
	if err != nil {
		return st, 0, fmt.Errorf("read job %s: %w", id, err)
	}
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return st, 0, fmt.Errorf("decode job %s: %w", id, err)
	}
	return st, e.Revision(), nil
}

// Get returns id's state and, once it has one, its result (nil before).
// A result is looked for even when the state is not final yet (a worker
// that stopped between publishing the result and recording the state).
// A job a worker has not taken yet that did not come through Submit (a
// producer that published directly) is unknown: ErrNotFound.
func (j *Store) Get(ctx context.Context, id string) (schema.JobState, *schema.JobResult, error) {
	if !schema.ValidRequestID(id) {
		return schema.JobState{}, nil, ErrNotFound
	}
	st, _, err := j.state(ctx, id)
	if errors.Is(err, ErrNotFound) {
		st.ResultsSubject = schema.ResultsSubject(id)
	} else if err != nil {
		return st, nil, err
	}
	res, err := j.result(ctx, st.ResultsSubject, id)
	if err != nil {
		return st, nil, err
	}
	if res != nil {
		if st.ID == "" { // only the result is left
			st = schema.JobState{ID: id, Model: res.Model, ResultsSubject: st.ResultsSubject, CreatedAt: res.FinishedAt}
		}
		st.Status, st.Attempts, st.UpdatedAt = res.Status, res.Attempts, res.FinishedAt
		return st, res, nil
	}
	if st.ID == "" {
		return st, nil, ErrNotFound
	}
	return st, nil, nil
}

// result reads job id's result from subject; nil when there is none.
func (j *Store) result(ctx context.Context, subject, id string) (*schema.JobResult, error) {
	m, err := j.results.GetLastMsgForSubject(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read result of %s: %w", id, err)
	}
	var res schema.JobResult
	if err := json.Unmarshal(m.Data, &res); err != nil {
		return nil, fmt.Errorf("decode result of %s: %w", id, err)
	}
	if res.ID != id {
		return nil, nil
	}
	if res.CompletionRef != "" {
		data, err := j.bodies.GetBytes(ctx, res.CompletionRef)
		if err != nil {
			return nil, fmt.Errorf("read large result %s: %w", res.CompletionRef, err)
		}
		res.Completion = new(schema.ChatCompletion)
		if err := json.Unmarshal(data, res.Completion); err != nil {
			return nil, fmt.Errorf("decode large result %s: %w", res.CompletionRef, err)
		}
	}
	return &res, nil
}

// Wait returns id's state and result once it is final, or its state when
// ctx ends first (then with a nil error: the caller asked to wait at most
// that long).
func (j *Store) Wait(ctx context.Context, id string) (schema.JobState, *schema.JobResult, error) {
	st, res, err := j.Get(ctx, id)
	if err != nil || st.Status.Final() {
		return st, res, err
	}
	w, err := j.kv.Watch(ctx, id, jetstream.UpdatesOnly())
	if err != nil {
		if ctx.Err() != nil {
			return st, nil, nil
		}
		return st, nil, fmt.Errorf("watch job %s: %w", id, err)
	}
	defer func() { _ = w.Stop() }()
	// Read again: the job may have finished before the watch began.
	if st, res, err = j.Get(ctx, id); err != nil || st.Status.Final() {
		return st, res, err
	}
	for {
		select {
		case <-ctx.Done():
			return st, nil, nil
		case e, ok := <-w.Updates():
			if !ok {
				return st, nil, nil
			}
			if e == nil || e.Operation() != jetstream.KeyValuePut {
				continue
			}
			var next schema.JobState
			if json.Unmarshal(e.Value(), &next) != nil {
				continue
			}
			st = next
			if next.Status.Final() {
				rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
				defer cancel()
				return j.Get(rctx, id)
			}
		}
	}
}

// Cancel cancels job id: a job not started yet is never run (the worker
// that takes it answers it cancelled), a running one has its LaaS call
// aborted (the cancel broadcast on schema.SubjectCancel). A job already
// final is left as it is. It returns the job's state after the cancel.
func (j *Store) Cancel(ctx context.Context, id string) (schema.JobState, error) {
	for range 10 {
		st, rev, err := j.state(ctx, id)
		if errors.Is(err, ErrNotFound) {
			st, _, err = j.Get(ctx, id) // only the result may be left
			return st, err
		}
		if err != nil {
			return st, err
		}
		if st.Status.Final() {
			return st, nil
		}
		st.Status, st.UpdatedAt = schema.JobCancelled, time.Now().UTC()
		data, _ := json.Marshal(st)
		if _, err := j.kv.Update(ctx, id, data, rev); err != nil {
			if casConflict(err) { // changed meanwhile: read again
				continue
			}
			return st, fmt.Errorf("cancel job %s: %w", id, err)
		}
		// A job's deadline is at most MaxRequestTimeout after it was queued:
		// workers forget the id then.
		if err := j.js.Conn().Publish(schema.SubjectCancel+"."+id, schema.CancelPayload(st.CreatedAt.Add(schema.MaxRequestTimeout))); err != nil {
			return st, fmt.Errorf("broadcast cancel of %s: %w", id, err)
		}
		return st, nil
	}
	return schema.JobState{}, fmt.Errorf("cancel job %s: its state kept changing", id)
}

// Queued records where job id's message is in the request stream (seq,
// on lane subject) while the job is queued; a job a worker started, or one
// cancelled, is left as it is. It returns the job's state.
func (j *Store) Queued(ctx context.Context, id string, seq uint64, lane string) (schema.JobState, error) {
	for range 10 {
		st, rev, err := j.state(ctx, id)
		if err != nil || st.Status != schema.JobQueued {
			return st, err
		}
		st.QueuedSeq, st.QueuedLane = seq, lane
		data, _ := json.Marshal(st)
		if _, err := j.kv.Update(ctx, id, data, rev); err != nil {
			if casConflict(err) { // changed meanwhile: read again
				continue
			}
			return st, fmt.Errorf("record job %s's place in the queue: %w", id, err)
		}
		return st, nil
	}
	return schema.JobState{}, fmt.Errorf("record job %s's place in the queue: its state kept changing", id)
}

// Start records that the delivery of request-stream sequence seq runs job
// env. run is false when it must not: the job was cancelled (the caller
// answers it cancelled) or another message with the same job id is running
// it (a duplicate; the caller drops it). A redelivery of the same message
// runs.
func (j *Store) Start(ctx context.Context, env *schema.Envelope, seq uint64, attempt int) (st schema.JobState, run bool, err error) {
	for range 10 {
		var rev uint64
		st, rev, err = j.state(ctx, env.ID)
		switch {
		case errors.Is(err, ErrNotFound): // a producer that published directly
			st = schema.JobState{ID: env.ID, Model: env.Model, CreatedAt: env.EnqueuedAt.UTC(), Owner: env.Owner}
		case err != nil:
			return st, false, err
		case st.Status == schema.JobCancelled:
			return st, false, nil
		case st.Status == schema.JobRunning && st.Seq != seq:
			return st, false, nil
		}
		st.Status, st.ResultsSubject, st.Seq, st.Attempts, st.UpdatedAt = schema.JobRunning, env.ResultsTo(), seq, attempt, time.Now().UTC()
		data, _ := json.Marshal(st)
		if rev == 0 {
			_, err = j.kv.Create(ctx, env.ID, data)
		} else {
			_, err = j.kv.Update(ctx, env.ID, data, rev)
		}
		if casConflict(err) {
			continue
		}
		if err != nil {
			return st, false, fmt.Errorf("record job %s running: %w", env.ID, err)
		}
		return st, true, nil
	}
	return st, false, fmt.Errorf("start job %s: its state kept changing", env.ID)
}

// Existing returns the result job env already has, or nil: on env's
// results subject, or on the subject its state names (a resubmission that
// asks for another subject), then copied to env's.
func (j *Store) Existing(ctx context.Context, env *schema.Envelope) (*schema.JobResult, error) {
	to := env.ResultsTo()
	res, err := j.result(ctx, to, env.ID)
	if err != nil || res != nil {
		return res, err
	}
	st, _, err := j.state(ctx, env.ID)
	if errors.Is(err, ErrNotFound) || err == nil && (st.ResultsSubject == to || st.ResultsSubject == "") {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if res, err = j.result(ctx, st.ResultsSubject, env.ID); err != nil || res == nil {
		return res, err
	}
	if err := j.publish(ctx, to, res, 0); err != nil {
		return nil, err
	}
	return res, j.Finished(ctx, env, res)
}

// Finish publishes res on env's results subject, then records the job's
// final state. A completion that would make the message larger than
// inlineMax bytes is kept in BucketBodies as <id>.result instead.
func (j *Store) Finish(ctx context.Context, env *schema.Envelope, res *schema.JobResult, inlineMax int) error {
	if err := j.publish(ctx, env.ResultsTo(), res, inlineMax); err != nil {
		return err
	}
	return j.Finished(ctx, env, res)
}

// Finished records job env's final state from its result, which is on
// env's results subject.
func (j *Store) Finished(ctx context.Context, env *schema.Envelope, res *schema.JobResult) error {
	st := schema.JobState{ID: env.ID, Status: res.Status, Model: env.Model, ResultsSubject: env.ResultsTo(),
		CreatedAt: env.EnqueuedAt.UTC(), UpdatedAt: res.FinishedAt, Attempts: res.Attempts, Owner: env.Owner}
	if old, _, err := j.state(ctx, env.ID); err == nil {
		st.CreatedAt = old.CreatedAt
	}
	data, _ := json.Marshal(st)
	if _, err := j.kv.Put(ctx, env.ID, data); err != nil {
		return fmt.Errorf("record job %s %s: %w", env.ID, res.Status, err)
	}
	return nil
}

// publish puts res on subject; Nats-Msg-Id is the subject (one result per
// job and subject), so a worker that publishes twice keeps one.
func (j *Store) publish(ctx context.Context, subject string, res *schema.JobResult, inlineMax int) error {
	data, err := json.Marshal(res)
	if err != nil {
		return err
	}
	if inlineMax > 0 && len(data) > inlineMax && res.Completion != nil {
		completion, err := json.Marshal(res.Completion)
		if err != nil {
			return err
		}
		ref := res.ID + ".result"
		if _, err := j.bodies.PutBytes(ctx, ref, completion); err != nil {
			return fmt.Errorf("store large result %s: %w", ref, err)
		}
		small := *res
		small.Completion, small.CompletionRef = nil, ref
		if data, err = json.Marshal(small); err != nil {
			return err
		}
	}
	msg := &nats.Msg{Subject: subject, Data: data, Header: nats.Header{}}
	msg.Header.Set(schema.HeaderMsgID, subject)
	if _, err := j.js.PublishMsg(ctx, msg); err != nil {
		return fmt.Errorf("publish result of %s: %w", res.ID, err)
	}
	return nil
}

// casConflict reports a compare-and-set lost to another writer: nats.go
// answers ErrKeyExists, or ErrKeyRevisionMismatch from a replicated
// stream.
func casConflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch)
}
