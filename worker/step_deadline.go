package worker

// This file holds the step that refuses a job whose deadline passed while
// it waited in the queue: it is answered 504 without calling LaaS.

import (
	"context"
	"fmt"
	"net/http"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// refuseLate answers a job delivered at or after its deadline with a 504
// (deadline_exceeded).
func (p *Pool) refuseLate(next handlerFunc) handlerFunc {
	return func(ctx context.Context, j *job) {
		if !j.env.Deadline.IsZero() && !j.received.Before(j.env.Deadline) {
			p.finish(j, schema.ErrorReply(j.env.ID, &schema.Error{
				Status: http.StatusGatewayTimeout, Type: schema.TypeTimeout, Code: schema.CodeDeadlineExceeded,
				Message: fmt.Sprintf("The request waited %s in the queue and passed its deadline before a worker could start it.",
					j.received.Sub(j.env.EnqueuedAt).Round(time.Millisecond)),
			}), 0)
			return
		}
		next(ctx, j)
	}
}
