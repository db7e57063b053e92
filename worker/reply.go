package worker

// This file holds how a delivery ends with an answer or without one: the
// reply published to the gateway (directly, or through StreamReplies), the
// answer kept for an Idempotency-Key, the ack, and the large body deleted.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/internal/accesslog"
	"github.com/laas-bridge/laas-bridge/queue/failover"
	"github.com/laas-bridge/laas-bridge/schema"
)

// finish publishes the reply, then acknowledges the job: a crash between
// the two redelivers the job rather than losing its answer. A large request
// body is deleted once the job is acknowledged.
func (p *Pool) finish(j *job, rep schema.Reply, upstream time.Duration) {
	rep.Attempts = j.attempt
	rep.QueueMs = queueMs(j) // SpanQueue's duration, from the same two instants
	rep.UpstreamMs = upstream.Milliseconds()
	if rep.Status == http.StatusOK && j.laasReq != nil {
		rep.Ran = schema.RunDigest(j.model.LaaSModel, j.model.ServiceType, j.model.PresetHash)
	}
	if j.span != nil {
		span := p.startReplySpan(j, &rep)
		defer span.End()
	}
	p.settleKey(j)
	if j.env.IdempotencyKey != "" {
		p.keepAnswer(j, &rep)
	}
	if j.env.Job && !p.keepResult(j, &rep) {
		return // handed back
	}
	if j.replyTo != "" {
		if err := p.publishReply(j.replyTo, &rep); err != nil {
			if j.attempt < p.maxDeliver {
				j.log.Error("publishing the reply failed; job handed back", "error", err)
				p.metrics.retried(j.env.Model, retryReplyFailed)
				_ = j.msg.NakWithDelay(time.Second)
				return
			}
			j.log.Error("publishing the reply failed on the last attempt; the answer is lost", "error", err)
		}
	}
	if err := j.msg.Ack(); err != nil {
		j.log.Warn("ack failed; the job may be redelivered", "error", err)
	}
	p.deleteBody(j)
	p.metrics.finished(j, &rep)
	if j.env.Job && p.access != nil {
		p.accessLine(j, &rep)
	}
	j.log.Info("job done", "status", rep.Status, "queue_ms", rep.QueueMs, "upstream_ms", rep.UpstreamMs)
}

// drop ends a job nobody waits for any more: acknowledged, no reply. A
// job (Envelope.Job) gets a cancelled result instead.
func (p *Pool) drop(j *job) {
	if j.env.Job {
		p.finish(j, schema.ErrorReply(j.env.ID, schema.JobCancelledError()), 0)
		return
	}
	p.settleKey(j)
	if err := j.msg.Ack(); err != nil {
		j.log.Warn("ack failed; the job may be redelivered", "error", err)
	}
	p.deleteBody(j)
}

// deleteBody removes a job's large request body, if it had one.
func (p *Pool) deleteBody(j *job) {
	if j.env.RequestRef == "" {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.bodies.Delete(ctx, j.env.RequestRef); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		j.log.Warn("could not delete the large request body; the store's TTL will", "error", err)
	}
}

// keepAnswer stores the final reply of a request with an Idempotency-Key,
// so a retry is answered from it. An answer too large for the store is not
// kept (logged): a retry after the dedupe window then runs again.
func (p *Pool) keepAnswer(j *job, rep *schema.Reply) {
	data, err := json.Marshal(rep)
	if err == nil && len(data) > p.inlineMax {
		err = fmt.Errorf("answer of %d bytes is too large to keep", len(data))
	}
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = p.answers.Put(ctx, j.env.IdempotencyKey, data)
		cancel()
	}
	if err != nil {
		j.log.Warn("could not keep the idempotent answer", "error", err)
	}
}

// publishReply sends rep to the gateway (see sendReply); an answer too
// large for a message goes through the object store and the reply names it.
func (p *Pool) publishReply(subject string, rep *schema.Reply) error {
	data, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	if len(data) > p.inlineMax && rep.Completion != nil {
		completion, err := json.Marshal(rep.Completion)
		if err != nil {
			return err
		}
		ref := rep.ID + ".reply"
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := p.bodies.PutBytes(ctx, ref, completion); err != nil {
			return fmt.Errorf("store large answer: %w", err)
		}
		small := *rep
		small.Completion, small.CompletionRef = nil, ref
		if data, err = json.Marshal(small); err != nil {
			return err
		}
	}
	return p.send(subject, data)
}

// directReplyTimeout bounds the wait for a gateway's answer on the reply's
// fast path; without an answer by then the reply goes through the stream.
const directReplyTimeout = 2 * time.Second

// sendReply hands a reply to the gateway. First the fast path: a core NATS
// request on the reply's direct subject, which no stream stores; the
// gateway answers once the reply is its caller's (a gateway in this
// process takes it without NATS, see HandRepliesTo). When that fails (no
// gateway listening, as with a gateway that is reconnecting or one older
// than the fast path; a timeout), the reply is published through JetStream
// into StreamReplies, which keeps it for a gateway that reconnects, and the
// stream's ack is awaited. A reply that arrives twice is delivered once.
// It is the pool's send unless a test replaces it.
func (p *Pool) sendReply(subject string, data []byte) error {
	if direct, ok := schema.DirectReplySubject(subject); ok {
		if local := p.local.Load(); local != nil && (*local)(direct, data) {
			p.metrics.replied(replyLocal)
			return nil
		}
		if _, err := p.nc.Request(direct, data, directReplyTimeout); err == nil {
			p.metrics.replied(replyDirect)
			return nil
		}
	}
	// Retried across a leader election of StreamReplies (a NATS node
	// lost); a reply stored twice is delivered once.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := failover.Publish(ctx, p.js, &nats.Msg{Subject: subject, Data: data}); err != nil {
		return err
	}
	p.metrics.replied(replyStream)
	return nil
}

// accessLine writes a job's access line (WithAccessLog): what the
// gateway writes for a request with a caller, from the worker's side. The
// key's alias is not known here; bytes_out is the completion's JSON.
func (p *Pool) accessLine(j *job, rep *schema.Reply) {
	line := &accesslog.Line{Start: j.received, Door: accesslog.DoorBatch, RequestID: j.env.ID, Model: j.env.Model,
		Lane: j.lane.String(), Status: rep.Status, BytesIn: int64(len(j.env.Request))}
	line.SetReply(rep)
	if j.span != nil {
		line.TraceID = j.span.SpanContext().TraceID().String()
	}
	if rep.Error != nil && rep.Error.Code != nil {
		line.ErrorCode = *rep.Error.Code
	}
	if c := rep.Completion; c != nil {
		if data, err := json.Marshal(c); err == nil {
			line.BytesOut = int64(len(data))
		}
		line.SetUsage(c.Usage)
	}
	p.access.Write(line)
}
