package bridge

import (
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/laas-bridge/laas-bridge/schema"
)

// The gateway's memory budget: request bodies are read whole into memory
// (the admission core decodes them, the claim check stores them), so the
// bytes of bodies held at once are capped (Config.MaxInflightBytes). A
// body that would go over the cap is refused with 503 server_overloaded
// and Retry-After before it is read, never read into an out-of-memory
// kill; a body that stops arriving is cut after Config.BodyReadTimeout
// with 408.

// DefaultMaxInflightBytes is Config.MaxInflightBytes's default when the
// process has no memory limit (GOMEMLIMIT, or the cgroup limit it is set
// from): eight bodies of the default 64 MiB.
const DefaultMaxInflightBytes = 512 << 20

// DefaultBodyReadTimeout is Config.BodyReadTimeout's default.
const DefaultBodyReadTimeout = 60 * time.Second

// CodeServerOverloaded is the error code of a request refused because the
// gateway holds as many request bodies (or callers of a kind) as it may.
const CodeServerOverloaded = "server_overloaded"

// CodeRequestTimeout is the error code of a body that did not arrive
// within Config.BodyReadTimeout.
const CodeRequestTimeout = "request_timeout"

// InflightBudget is the bytes of request bodies a gateway holds at once by
// default, given the process's memory limit (runtime/debug.SetMemoryLimit;
// math.MaxInt64 or less than 1 for none) and the largest body: a quarter
// of the limit, because a body costs about three times its size while it
// is read, decoded and queued, and the rest of the process needs room too;
// never less than maxBody, so that the largest body can always be taken
// alone. Without a limit, DefaultMaxInflightBytes.
func InflightBudget(memLimit, maxBody int64) int64 {
	if memLimit <= 0 || memLimit == math.MaxInt64 {
		return max(DefaultMaxInflightBytes, maxBody)
	}
	return max(memLimit/4, maxBody)
}

// bodyBudget counts the bytes of request bodies held in memory against a
// cap. Safe for concurrent use.
type bodyBudget struct {
	max  int64
	used atomic.Int64
}

// reserve takes n bytes of the budget; false, taking nothing, when that
// would go over the cap.
func (b *bodyBudget) reserve(n int64) bool {
	for {
		used := b.used.Load()
		if n > b.max-used {
			return false
		}
		if b.used.CompareAndSwap(used, used+n) {
			return true
		}
	}
}

// release gives n reserved bytes back.
func (b *bodyBudget) release(n int64) {
	if b.used.Add(-n) < 0 {
		panic(fmt.Sprintf("body budget released more than it reserved (%d)", n))
	}
}

// inUse is the bytes reserved now.
func (b *bodyBudget) inUse() int64 { return b.used.Load() }

// bodyClaim is one request's share of the budget. Its release is
// idempotent, so a handler both defers it and calls it as soon as the
// body's memory is no longer held.
type bodyClaim struct {
	budget *bodyBudget
	mu     sync.Mutex
	held   int64
}

// grow reserves n more bytes for this claim.
func (c *bodyClaim) grow(n int64) bool {
	if !c.budget.reserve(n) {
		return false
	}
	c.mu.Lock()
	c.held += n
	c.mu.Unlock()
	return true
}

// release gives back every byte this claim holds.
func (c *bodyClaim) release() {
	c.mu.Lock()
	n := c.held
	c.held = 0
	c.mu.Unlock()
	if n > 0 {
		c.budget.release(n)
	}
}

// overloaded is the refusal of a body the budget has no room for.
func overloaded(what string) *schema.Error {
	return &schema.Error{Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: CodeServerOverloaded, RetryAfter: 1,
		Message: "This gateway holds as many " + what + " as it may at once; send the request again shortly."}
}

// bodyTimedOut is the refusal of a body that stopped arriving.
func bodyTimedOut(timeout time.Duration) *schema.Error {
	return &schema.Error{Status: http.StatusRequestTimeout, Type: schema.TypeInvalidRequest, Code: CodeRequestTimeout,
		Message: fmt.Sprintf("The request body did not arrive within %s.", timeout)}
}

// firstChunk is the buffer a body is first read into; it doubles from
// there as bytes arrive, up to the declared length.
const firstChunk = 256 << 10

// readBody reads the request body, at most MaxBodyBytes of it, within
// BodyReadTimeout, holding its bytes against the gateway's body budget.
// A body with a Content-Length reserves that length before anything is
// read; a chunked one reserves as its buffer grows. Memory is never sized
// from Content-Length before the bytes arrive. The caller must call
// release (idempotent) once it no longer holds the body, and on every
// path; on an error readBody has released already.
func (g *Gateway) readBody(c echo.Context) (body []byte, release func(), err error) {
	r := c.Request()
	if r.ContentLength > g.cfg.MaxBodyBytes {
		return nil, nil, &http.MaxBytesError{Limit: g.cfg.MaxBodyBytes}
	}
	claim := &bodyClaim{budget: g.budget}
	if r.ContentLength > 0 && !claim.grow(r.ContentLength) {
		g.metrics.refused(limitBodyBytes)
		return nil, nil, overloaded("request bodies")
	}
	rc := http.NewResponseController(c.Response())
	if err := rc.SetReadDeadline(time.Now().Add(g.cfg.BodyReadTimeout)); err != nil && !errors.Is(err, http.ErrNotSupported) {
		claim.release()
		return nil, nil, err
	}
	body, err = readAll(http.MaxBytesReader(c.Response(), r.Body, g.cfg.MaxBodyBytes), r.ContentLength, g.cfg.MaxBodyBytes, claim)
	// No reset needed: net/http clears the read deadline once the body
	// has been read to its end, so the answer's own wait (minutes, for a
	// stream) is not bounded by it (TestBodyReadTimeout, slow answer).
	if err != nil {
		claim.release()
		switch {
		case errors.Is(err, errBudget):
			g.metrics.refused(limitBodyBytes)
			return nil, nil, overloaded("request bodies")
		case errors.Is(err, os.ErrDeadlineExceeded):
			return nil, nil, bodyTimedOut(g.cfg.BodyReadTimeout)
		}
		return nil, nil, err
	}
	return body, claim.release, nil
}

// errBudget is readAll's error when the claim cannot grow.
var errBudget = errors.New("body budget exhausted")

// readAll reads r to its end into a buffer that starts small and doubles
// as bytes arrive, never past declared (the Content-Length, or -1) nor
// past limit (r's own limit, which then reports the excess), and never
// before a byte more has arrived. A body of unknown length grows claim
// with its buffer, so it claims at most limit: with a budget of exactly
// the largest body, that body is taken; a declared one has reserved its
// length already.
func readAll(r io.Reader, declared, limit int64, claim *bodyClaim) ([]byte, error) {
	size := int64(firstChunk)
	if declared >= 0 {
		size = min(size, declared)
	} else if !claim.grow(size) {
		return nil, errBudget
	}
	// end is the most the body may hold: its declared length, or the
	// limit (r reports a byte more as its error).
	end := declared
	if end < 0 {
		end = limit
	}
	buf := make([]byte, 0, size)
	for {
		if len(buf) == cap(buf) {
			// Full: read one byte before growing, so a body that ends
			// here (its Content-Length, the limit, or a chunked body
			// whose length is the buffer's) never reserves more.
			var probe [1]byte
			n, err := r.Read(probe[:])
			switch {
			case n == 0 && errors.Is(err, io.EOF):
				return buf, nil
			case n == 0 && err != nil:
				return nil, err // a MaxBytesError past the limit, a hang-up
			case n == 0:
				continue
			case int64(len(buf)) >= end && declared >= 0:
				return nil, fmt.Errorf("request body longer than its Content-Length %d", declared)
			case int64(len(buf)) >= end:
				return nil, &http.MaxBytesError{Limit: limit}
			}
			next := min(int64(max(cap(buf)*2, 512)), end)
			if declared < 0 && !claim.grow(next-int64(cap(buf))) {
				return nil, errBudget
			}
			grown := make([]byte, len(buf), next)
			copy(grown, buf)
			buf = append(grown, probe[0])
			if errors.Is(err, io.EOF) {
				return buf, nil
			}
			if err != nil {
				return nil, err
			}
			continue
		}
		n, err := r.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if errors.Is(err, io.EOF) {
			return buf, nil
		}
		if err != nil {
			return nil, err
		}
	}
}
