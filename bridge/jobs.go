package bridge

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/queue/jobstore"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Async jobs over HTTP: POST /v1/queue/jobs queues a chat request in the
// batch lane and answers 202 with a job id at once; GET /v1/queue/jobs/{id}
// reads its state and result (?wait= long-polls); DELETE cancels it. State
// and results live in JetStream (jobstore), so jobs outlive every process.

// ObjectQueueJob is the "object" of a job in the jobs API.
const ObjectQueueJob = "queue.job"

// DefaultMaxJobWatchers is Config.MaxJobWatchers's default. Each long
// poll holds a watch on the jobs bucket (a consumer on the NATS server).
const DefaultMaxJobWatchers = 256

// MaxJobWait caps GET /v1/queue/jobs/{id}?wait=; longer waits are cut to it.
const MaxJobWait = 60 * time.Second

// CodeJobNotFound is the error code of an unknown job id.
const CodeJobNotFound = "job_not_found"

// Job is a job as the jobs API shows it.
type Job struct {
	ID     string           `json:"id"`
	Object string           `json:"object"`
	Status schema.JobStatus `json:"status"`
	Model  string           `json:"model"`
	// CreatedAt and FinishedAt are Unix seconds; FinishedAt is null until
	// the job is final.
	CreatedAt  int64  `json:"created_at"`
	FinishedAt *int64 `json:"finished_at"`
	Attempts   int    `json:"attempts"`
	// Result is the chat.completion of a succeeded job, else null.
	Result *schema.ChatCompletion `json:"result"`
	// StatusCode is what /v1/chat/completions would have answered (200,
	// 4xx/5xx, 499 for a cancelled job); 0 until the job is final.
	StatusCode int `json:"status_code,omitempty"`
	// Error is the OpenAI error of a failed or cancelled job, else null.
	Error *schema.ErrorDetail `json:"error"`
	// Position is how many jobs a worker takes before this one, and EtaMs
	// how long until one takes it, while it is queued (queuePositions);
	// absent otherwise, and EtaMs until workers have taken jobs lately.
	Position *int   `json:"position,omitempty"`
	EtaMs    *int64 `json:"eta_ms,omitempty"`
}

// jobOf builds the API view of a job's state and result (nil before it has one).
func jobOf(st schema.JobState, res *schema.JobResult) Job {
	j := Job{ID: st.ID, Object: ObjectQueueJob, Status: st.Status, Model: st.Model, CreatedAt: st.CreatedAt.Unix(), Attempts: st.Attempts}
	switch {
	case res != nil:
		fin := res.FinishedAt.Unix()
		j.FinishedAt, j.Result, j.StatusCode, j.Error = &fin, res.Completion, res.StatusCode, res.Error
	case st.Status == schema.JobCancelled:
		// Cancelled, and its worker has not written the result yet (it
		// will be this same error): answer it now.
		fin, e := st.UpdatedAt.Unix(), schema.JobCancelledError()
		d := e.Body().Error
		j.FinishedAt, j.StatusCode, j.Error = &fin, e.Status, &d
	}
	return j
}

// jobRoutes registers the jobs API on e.
func (g *Gateway) jobRoutes(e *echo.Echo) {
	e.POST("/v1/queue/jobs", g.submitJob, g.authenticate)
	e.GET("/v1/queue/jobs/:id", g.getJob, g.authenticate)
	e.DELETE("/v1/queue/jobs/:id", g.deleteJob, g.authenticate)
}

// submitJob admits a chat request through the core as a job in the batch
// lane and answers 202 with the job.
func (g *Gateway) submitJob(c echo.Context) error {
	r := c.Request()
	body, releaseBody, err := g.readBody(c)
	if err != nil {
		return err
	}
	defer releaseBody()
	// Nobody waits on a job: without a timeout header it may wait in the
	// batch lane as long as any request (24 h); each LaaS call is still
	// bounded by the model's timeout.
	timeout, err := headerTimeout(r.Header)
	if err != nil {
		return err
	}
	wait, err := queueWait(r.Header)
	if err != nil {
		return err
	}
	id := c.Response().Header().Get(HeaderRequestID)
	ck, err := g.core.Check(admission.Request{ID: id, Body: body, Caller: callerOf(c), Door: admission.DoorJobs, Lane: admission.Batch, Timeout: timeout,
		Job: &admission.Job{Record: true}, QueueWait: wait})
	if o := observed(c); o != nil {
		o.model, o.lane = ck.Model.Alias, string(ck.Lane)
	}
	if err != nil {
		return err
	}
	t, err := g.core.Admit(r.Context(), ck)
	if err != nil {
		return err
	}
	g.log.Info("job queued", "request_id", id, "model", ck.Model.Alias)
	c.Response().Header().Set(echo.HeaderLocation, "/v1/queue/jobs/"+id)
	j := jobOf(t.JobState, nil)
	seq, lane := t.Seq, t.Subject
	if t.Duplicate { // submitted again: where the first submission stands
		seq, lane = t.JobState.QueuedSeq, t.JobState.QueuedLane
	}
	if t.JobState.Status == schema.JobQueued {
		if j.Position, j.EtaMs = g.place(r.Context(), seq, lane); j.Position != nil {
			c.Response().Header().Set(HeaderQueuePosition, strconv.Itoa(*j.Position))
		}
	}
	return c.JSON(http.StatusAccepted, j)
}

// getJob answers a job's state and result; with ?wait= it waits (at most
// MaxJobWait) for the job to be final. Another's job is not found, at
// once.
func (g *Gateway) getJob(c echo.Context) error {
	id := c.Param("id")
	wait, err := parseWait(c.QueryParam("wait"))
	if err != nil {
		return err
	}
	ctx := c.Request().Context()
	st, res, err := g.ownJob(c, id)
	if err != nil {
		return g.jobError(ctx, id, err)
	}
	if wait > 0 && !st.Status.Final() {
		if !g.watch() {
			g.metrics.refused(limitJobWatchers)
			return overloaded("long polls on jobs")
		}
		defer g.watchers.Add(-1)
		wctx, cancel := context.WithTimeout(ctx, wait)
		defer cancel()
		go func() { // a gateway that shuts down answers long polls at once
			select {
			case <-g.stopping:
				cancel()
			case <-wctx.Done():
			}
		}()
		if st, res, err = g.jobs.Wait(wctx, id); err != nil {
			return g.jobError(ctx, id, err)
		}
	}
	j := jobOf(st, res)
	if st.Status == schema.JobQueued && res == nil {
		j.Position, j.EtaMs = g.place(ctx, st.QueuedSeq, st.QueuedLane)
	}
	return c.JSON(http.StatusOK, j)
}

// watch takes one of Config.MaxJobWatchers long polls; false when all
// are taken. The caller must give it back (g.watchers.Add(-1)).
func (g *Gateway) watch() bool {
	for {
		n := g.watchers.Load()
		if n >= int64(g.cfg.MaxJobWatchers) {
			return false
		}
		if g.watchers.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// ownJob returns job id's state and result when the caller sees it
// (keys.Caller.Sees): another's job is jobstore.ErrNotFound, as a missing
// one, so that its answer tells nothing of it. A job known only by its
// result (its state gone) has no recorded owner: the admin's.
func (g *Gateway) ownJob(c echo.Context, id string) (schema.JobState, *schema.JobResult, error) {
	st, res, err := g.jobs.Get(c.Request().Context(), id)
	if err == nil && !callerOf(c).Sees(st.Owner) {
		return schema.JobState{}, nil, jobstore.ErrNotFound
	}
	return st, res, err
}

// deleteJob cancels a job: a queued job never calls LaaS, a running one has
// its call aborted; a final job is left as it is. It answers the job.
// Another's job is not found, and left alone.
func (g *Gateway) deleteJob(c echo.Context) error {
	id := c.Param("id")
	ctx := c.Request().Context()
	if !schema.ValidRequestID(id) {
		return g.jobError(ctx, id, jobstore.ErrNotFound)
	}
	if _, _, err := g.ownJob(c, id); err != nil {
		return g.jobError(ctx, id, err)
	}
	st, err := g.jobs.Cancel(ctx, id)
	if err != nil {
		return g.jobError(ctx, id, err)
	}
	var res *schema.JobResult
	if st.Status.Final() && st.Status != schema.JobCancelled {
		if st, res, err = g.jobs.Get(ctx, id); err != nil {
			return g.jobError(ctx, id, err)
		}
	}
	g.log.Info("job cancel requested", "request_id", c.Response().Header().Get(HeaderRequestID), "job_id", id, "status", st.Status)
	return c.JSON(http.StatusOK, jobOf(st, res))
}

func (g *Gateway) jobError(ctx context.Context, id string, err error) error {
	switch {
	case errors.Is(err, jobstore.ErrNotFound):
		return &schema.Error{Status: http.StatusNotFound, Type: schema.TypeInvalidRequest, Code: CodeJobNotFound, Param: "id",
			Message: fmt.Sprintf("No job with id %q: it was never submitted, or it finished longer ago than the results are kept.", id)}
	case ctx.Err() != nil:
		return clientGone(err)
	}
	return storeUnavailable("The job store", err)
}

// parseWait reads ?wait=: a Go duration ("30s", "1m") or seconds ("30");
// empty or zero for no wait; more than MaxJobWait is cut to it.
func parseWait(v string) (time.Duration, error) {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		secs, ferr := strconv.ParseFloat(v, 64)
		if ferr != nil || math.IsNaN(secs) {
			return 0, schema.Invalid("wait", schema.CodeInvalidValue, "wait must be a duration such as 30s or a number of seconds, got %q.", v)
		}
		d = time.Duration(math.Min(secs, MaxJobWait.Seconds()) * float64(time.Second))
	}
	if d < 0 {
		return 0, schema.Invalid("wait", schema.CodeInvalidValue, "wait must not be negative, got %q.", v)
	}
	return min(d, MaxJobWait), nil
}
