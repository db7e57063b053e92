package worker

// This file holds the claim-check step: a request body too large for a
// message travelled through the object store (Envelope.RequestRef) and is
// fetched before the job runs.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// claimTimeout bounds the fetch of one large body: this much, and a
// second more per MiB of it, as the gateway's store of it is bounded
// (admission's storeBody). A 40 MB body on a busy machine under the race
// detector took more than a flat 30 s, and every attempt failed alike.
const claimTimeout = 30 * time.Second

// claimTimeoutFor is the fetch's bound for a body of size bytes.
func claimTimeoutFor(size uint64) time.Duration {
	return claimTimeout + time.Duration(size>>20)*time.Second
}

// claimBody fetches a large request body into the envelope. A store that
// does not answer hands the job back for another attempt (a second later);
// a body that is gone, or still unreadable on the last attempt, is
// answered with a 500.
func (p *Pool) claimBody(next handlerFunc) handlerFunc {
	return func(ctx context.Context, j *job) {
		if j.env.RequestRef == "" {
			next(ctx, j)
			return
		}
		err := p.claimRequest(ctx, &j.env)
		if err == nil {
			next(ctx, j)
			return
		}
		j.log.Error("large request body unavailable", "error", err)
		if ctx.Err() == nil && !errors.Is(err, jetstream.ErrObjectNotFound) && j.attempt < p.maxDeliver {
			p.metrics.retried(j.env.Model, retryBodyUnavailable)
			_ = j.msg.NakWithDelay(time.Second) // the store may come back
			return
		}
		p.finish(j, schema.ErrorReply(j.env.ID, &schema.Error{Status: http.StatusInternalServerError, Type: schema.TypeServer,
			Message: "The request's body could not be read from the queue's store; send the request again.", Cause: err}), 0)
	}
}

// claimRequest fetches a request body that travelled through the object store.
func (p *Pool) claimRequest(ctx context.Context, env *schema.Envelope) error {
	infoCtx, cancel := context.WithTimeout(ctx, claimTimeout)
	info, err := p.bodies.GetInfo(infoCtx, env.RequestRef)
	cancel()
	if err != nil {
		return fmt.Errorf("fetch request body %s: %w", env.RequestRef, err)
	}
	ctx, cancel = context.WithTimeout(ctx, claimTimeoutFor(info.Size))
	defer cancel()
	data, err := p.bodies.GetBytes(ctx, env.RequestRef)
	if err != nil {
		return fmt.Errorf("fetch request body %s: %w", env.RequestRef, err)
	}
	env.Request = data
	return nil
}
