package worker

// This file holds the dead letters: jobs that ran out of attempts, kept on
// their own stream (with a large body in the object store) for inspection
// and replay, and the watcher that rescues jobs that reached MaxDeliver
// without a worker finishing them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

// advisoryMaxDeliveries prefixes the advisory the server publishes when a
// message reaches its consumer's MaxDeliver: <prefix>.<stream>.<consumer>.
const advisoryMaxDeliveries = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES"

// deadLetterGroup is the queue group of the MaxDeliver watchers: one worker
// process handles each advisory.
const deadLetterGroup = "laas-dead-letters"

// DeadLetters keeps jobs that ran out of attempts on schema.StreamDead, one
// message per job, whose body is a schema.DeadLetterRecord. A request body
// larger than half the NATS max payload is kept in schema.BucketBodies as
// <id>.dead and the record names it. Keeping the same job twice (the same
// request id and enqueue time) stores it once: the message's Nats-Msg-Id is
// derived from both, within the stream's duplicate window.
//
// WatchMaxDeliveries also rescues jobs that reached MaxDeliver without a
// worker finishing them. DeadLetters is safe for concurrent use.
type DeadLetters struct {
	js        jetstream.JetStream
	bodies    jetstream.ObjectStore
	inlineMax int
	log       *slog.Logger
	reg       prometheus.Registerer
	rescued   prometheus.Counter // nil: not counted
	ledger    KeyLedger          // nil: keys' leases are left to lapse
}

var _ DeadLetterer = (*DeadLetters)(nil)

// DeadLettersOption configures DeadLetters.
type DeadLettersOption func(*DeadLetters)

// DeadLettersWithMetrics counts the jobs WatchMaxDeliveries keeps, as
// laas_bridge_worker_dead_letters_total{reason="max_deliveries_reached"} in
// reg: the counter a pool built WithMetrics(reg) shares. Nil reg: none.
func DeadLettersWithMetrics(reg prometheus.Registerer) DeadLettersOption {
	return func(d *DeadLetters) { d.reg = reg }
}

// DeadLettersWithKeyLedger releases the parallel lease of a virtual key's
// job that WatchMaxDeliveries rescues: no worker finished it, so none
// settled it.
func DeadLettersWithKeyLedger(l KeyLedger) DeadLettersOption {
	return func(d *DeadLetters) { d.ledger = l }
}

// NewDeadLetters keeps dead letters through js. The dead-letter stream and
// the large-body store must exist (see queue.Ensure).
func NewDeadLetters(ctx context.Context, js jetstream.JetStream, log *slog.Logger, opts ...DeadLettersOption) (*DeadLetters, error) {
	if _, err := js.Stream(ctx, schema.StreamDead); err != nil {
		return nil, fmt.Errorf("dead-letter stream %s: %w", schema.StreamDead, err)
	}
	bodies, err := js.ObjectStore(ctx, schema.BucketBodies)
	if err != nil {
		return nil, fmt.Errorf("large-body store %s: %w", schema.BucketBodies, err)
	}
	d := &DeadLetters{js: js, bodies: bodies, inlineMax: int(js.Conn().MaxPayload() / 2), log: log}
	for _, o := range opts {
		o(d)
	}
	if d.reg != nil {
		c, err := deadLettersCounter(d.reg)
		if err != nil {
			return nil, err
		}
		d.rescued = c.WithLabelValues(deadMaxDeliveries)
	}
	return d, nil
}

// deadLetterRecord is the record kept for dl, with the request inline
// (RequestRef empty) whatever its size.
func deadLetterRecord(dl DeadLetter) schema.DeadLetterRecord {
	utc := func(t time.Time) time.Time {
		if t.IsZero() {
			return t
		}
		return t.UTC()
	}
	return schema.DeadLetterRecord{
		ID:          dl.Envelope.ID,
		Model:       dl.Envelope.Model,
		Request:     dl.Envelope.Request,
		Owner:       dl.Envelope.Owner,
		Reason:      schema.DeadLetterReason{Status: dl.Status, Error: dl.Reason},
		Attempts:    dl.Attempts,
		EnqueuedAt:  utc(dl.Envelope.EnqueuedAt),
		Deadline:    utc(dl.Envelope.Deadline),
		LastAttempt: utc(dl.LastAttempt),
		FailedAt:    utc(dl.FailedAt),
	}
}

// DeadLetter publishes dl to the dead-letter stream and returns once the
// stream has stored it (or found it a duplicate).
func (d *DeadLetters) DeadLetter(ctx context.Context, dl DeadLetter) error {
	if dl.Envelope.ID == "" {
		return errors.New("dead letter without a request id")
	}
	log := d.log.With("request_id", dl.Envelope.ID, "model", dl.Envelope.Model, "attempts", dl.Attempts)
	if len(dl.Envelope.Request) == 0 && dl.Envelope.RequestRef != "" {
		// The job failed before its large body was read; keep it if it can
		// be read now (the pool deletes the original when it ends the job).
		if body, err := d.bodies.GetBytes(ctx, dl.Envelope.RequestRef); err == nil {
			dl.Envelope.Request = body
		} else {
			log.Warn("the dead letter's large request body could not be read; it is kept without it", "request_ref", dl.Envelope.RequestRef, "error", err)
		}
	}
	rec := deadLetterRecord(dl)
	// A body too large to travel inline, or one that is not JSON (it could
	// not be embedded), is kept in the object store.
	if len(rec.Request) > d.inlineMax || (len(rec.Request) > 0 && !json.Valid(rec.Request)) {
		ref := dl.Envelope.ID + ".dead"
		if _, err := d.bodies.PutBytes(ctx, ref, rec.Request); err != nil {
			return fmt.Errorf("keep the large request body of dead letter %s: %w", dl.Envelope.ID, err)
		}
		rec.Request, rec.RequestRef = nil, ref
	}
	data, err := json.Marshal(rec)
	if err != nil {
		return fmt.Errorf("encode dead letter %s: %w", dl.Envelope.ID, err)
	}
	msg := nats.NewMsg(schema.DeadLetterSubject(dl.Envelope.ID))
	msg.Data = data
	msg.Header.Set(schema.HeaderMsgID, deadLetterMsgID(dl.Envelope))
	ack, err := d.js.PublishMsg(ctx, msg)
	if err != nil {
		return fmt.Errorf("publish dead letter %s: %w", dl.Envelope.ID, err)
	}
	if ack.Duplicate {
		log.Info("dead letter already kept")
		return nil
	}
	log.Warn("job kept as a dead letter", "status", dl.Status, "reason", dl.Reason.Message, "dead_seq", ack.Sequence)
	return nil
}

// deadLetterMsgID identifies one enqueued job: its request id and enqueue
// time. A replayed job is enqueued afresh, so if it fails again it is kept
// again instead of being taken for a duplicate of its first dead letter.
func deadLetterMsgID(env schema.Envelope) string {
	if env.EnqueuedAt.IsZero() {
		return env.ID
	}
	return env.ID + "@" + strconv.FormatInt(env.EnqueuedAt.UnixNano(), 10)
}

// maxDeliveriesAdvisory is the part of the server's
// io.nats.jetstream.advisory.v1.max_deliver event that is read here.
type maxDeliveriesAdvisory struct {
	Time       time.Time `json:"timestamp"`
	Stream     string    `json:"stream"`
	Consumer   string    `json:"consumer"`
	StreamSeq  uint64    `json:"stream_seq"`
	Deliveries uint64    `json:"deliveries"`
}

// WatchMaxDeliveries rescues jobs that reach the workers' MaxDeliver
// without a worker finishing them (a worker crashed, hung or was stopped on
// every attempt). JetStream leaves such a job in the request stream, and
// publishes an advisory naming it; on that advisory the job is read by its
// stream sequence, kept as a dead letter with the reason "max deliveries
// reached", then deleted from the request stream (with its large body, if
// it had one).
//
// Advisories are core NATS messages: only a process subscribed when one is
// sent hears it, so start watching before the pool pulls. Every worker
// process may watch; a queue group hands each advisory to one of them. The
// returned stop ends the subscription and waits for a rescue in progress.
func (d *DeadLetters) WatchMaxDeliveries(ctx context.Context) (stop func(), err error) {
	nc := d.js.Conn()
	// Rescues run after ctx ends (a pool finishing its calls at shutdown
	// can still exhaust a job); stop ends them.
	base, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var mu sync.Mutex // held by a rescue in progress and by stop
	closed := false
	subject := advisoryMaxDeliveries + "." + schema.StreamRequests + ".*" // both lanes
	sub, err := nc.QueueSubscribe(subject, deadLetterGroup, func(m *nats.Msg) {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return
		}
		var adv maxDeliveriesAdvisory
		if err := json.Unmarshal(m.Data, &adv); err != nil || adv.StreamSeq == 0 {
			d.log.Error("unreadable max-deliveries advisory", "error", err)
			return
		}
		rctx, done := context.WithTimeout(base, time.Minute)
		defer done()
		if id, err := d.rescue(rctx, adv); err != nil {
			d.log.Error("a job that reached max deliveries could not be kept as a dead letter; it stays in the request stream",
				"request_id", id, "stream_seq", adv.StreamSeq, "error", err)
		}
	})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("subscribe to max-deliveries advisories: %w", err)
	}
	fctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		fctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	if err := nc.FlushWithContext(fctx); err != nil {
		cancel()
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("subscribe to max-deliveries advisories: %w", err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			_ = sub.Unsubscribe()
			cancel()
			mu.Lock()
			closed = true
			mu.Unlock()
		})
	}, nil
}

// rescue keeps the job at adv.StreamSeq as a dead letter and deletes it
// from the request stream. A job already gone (another process rescued it)
// is not an error.
func (d *DeadLetters) rescue(ctx context.Context, adv maxDeliveriesAdvisory) (id string, err error) {
	stream, err := d.js.Stream(ctx, schema.StreamRequests)
	if err != nil {
		return "", err
	}
	raw, err := stream.GetMsg(ctx, adv.StreamSeq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		d.log.Debug("job that reached max deliveries is gone already", "stream_seq", adv.StreamSeq)
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read the job: %w", err)
	}
	var env schema.Envelope
	if err := json.Unmarshal(raw.Data, &env); err != nil || env.ID == "" {
		return "", fmt.Errorf("the message on %s is not a request envelope (%v)", raw.Subject, err)
	}
	log := d.log.With("request_id", env.ID, "model", env.Model, "stream_seq", adv.StreamSeq)
	if env.RequestRef != "" && len(env.Request) == 0 {
		body, err := d.bodies.GetBytes(ctx, env.RequestRef)
		switch {
		case errors.Is(err, jetstream.ErrObjectNotFound):
			log.Warn("the dead letter's large request body is gone; it is kept without it", "request_ref", env.RequestRef)
		case err != nil:
			return env.ID, fmt.Errorf("read the large request body %s: %w", env.RequestRef, err)
		default:
			env.Request = body
		}
	}
	attempts := int(adv.Deliveries)
	if cons, err := stream.Consumer(ctx, schema.ConsumerWorkers); err == nil {
		// The server counts the delivery it refused in some paths.
		if md := cons.CachedInfo().Config.MaxDeliver; md > 0 && attempts > md {
			attempts = md
		}
	}
	failedAt := adv.Time
	if failedAt.IsZero() {
		failedAt = time.Now()
	}
	dl := DeadLetter{
		Envelope: env,
		Reason: schema.ErrorDetail{
			Message: fmt.Sprintf("max deliveries reached: the job was delivered %d times and no worker finished it (a worker crashed, hung or was stopped on every attempt)", attempts),
			Type:    schema.TypeServer,
			Code:    new(schema.CodeMaxDeliveries),
		},
		Status:   http.StatusInternalServerError,
		Attempts: attempts,
		FailedAt: failedAt,
	}
	if err := d.DeadLetter(ctx, dl); err != nil {
		return env.ID, err
	}
	if d.rescued != nil {
		d.rescued.Inc()
	}
	if d.ledger != nil && env.Owner != "" {
		if err := d.ledger.Settle(ctx, env.Owner, nil, env.ID, keys.Spent{}); err != nil {
			log.Warn("could not release the key's lease of a rescued job; it lapses after the deadline", "error", err)
		}
	}
	if err := stream.DeleteMsg(ctx, adv.StreamSeq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return env.ID, fmt.Errorf("the job is kept as a dead letter but could not be deleted from %s: %w", schema.StreamRequests, err)
	}
	if env.RequestRef != "" {
		if err := d.bodies.Delete(ctx, env.RequestRef); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			log.Warn("could not delete the large request body; the store's TTL will", "error", err)
		}
	}
	return env.ID, nil
}
