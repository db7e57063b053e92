package worker

// This file holds the contract between the pool and a rate limiter: the
// Limiter interface and the lane a job came in by.

import (
	"context"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Lane is the lane a job came in by: interactive (schema.SubjectInteractive,
// a caller waits) or batch (schema.SubjectBatch, a bulk producer). The pool
// pulls interactive jobs first and tells its Limiter each call's lane.
type Lane uint8

// The lanes. LaneInteractive is the zero value.
const (
	LaneInteractive Lane = iota
	LaneBatch
)

// laneCount is the number of lanes; arrays indexed by Lane have it.
const laneCount = 2

// String is the lane's name as metrics label it: "interactive" or "batch".
func (l Lane) String() string {
	if l == LaneBatch {
		return "batch"
	}
	return "interactive"
}

// laneOf is the lane of a job delivered on subject.
func laneOf(subject string) Lane {
	if subject == schema.SubjectBatch {
		return LaneBatch
	}
	return LaneInteractive
}

// Limiter paces LaaS calls across every worker process. Implementations
// must be safe for concurrent use.
type Limiter interface {
	// Wait blocks until a call for model, of a job from lane, may start.
	// It returns ctx's error if ctx ends first; the pool then hands the job
	// back (or answers it, when the job's deadline is what ended ctx). A
	// limiter may let LaneInteractive calls start before LaneBatch ones; the
	// limit is the same for both.
	Wait(ctx context.Context, model schema.Model, lane Lane) error
	// Throttled reports that LaaS answered 429: every worker holds off new
	// calls for d. It returns promptly; the end of ctx (a job's) must not
	// cancel the report.
	Throttled(ctx context.Context, d time.Duration)
}
