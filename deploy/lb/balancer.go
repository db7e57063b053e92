package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Error codes of the balancer's own answers.
const (
	// CodeNoGateway: no gateway accepted the connection, so the request was
	// not sent; sending it again is safe.
	CodeNoGateway = "no_gateway"
	// CodeGatewayError: the gateway's connection broke after the request
	// was sent; the gateway may have accepted it.
	CodeGatewayError = "gateway_error"
)

// errNoUpstream: the upstream name resolves to no address.
var errNoUpstream = errors.New("the upstream name resolves to no address")

// balancer is the reverse proxy's transport: it sends each request to the
// next upstream address in turn, and to the next one again when a
// connection cannot be made (then nothing was sent, so any request, a POST
// too, is safe to send elsewhere). Once a connection is made, the request
// is never sent again.
type balancer struct {
	resolve   func(context.Context) ([]string, error)
	transport http.RoundTripper
	downFor   time.Duration
	log       *slog.Logger

	next  atomic.Uint64
	mu    sync.Mutex
	addrs []string             // the last resolved addresses, host:port
	down  map[string]time.Time // addresses whose dial failed, and when
}

func newBalancer(resolve func(context.Context) ([]string, error), transport http.RoundTripper, downFor time.Duration, log *slog.Logger) *balancer {
	return &balancer{resolve: resolve, transport: transport, downFor: downFor, log: log, down: map[string]time.Time{}}
}

// dnsResolver resolves upstream ("host:port") to one address per IP of
// host, sorted, so that `docker compose --scale gateway=N` and a stopped
// gateway show up at the next refresh.
func dnsResolver(upstream string) (func(context.Context) ([]string, error), error) {
	host, port, err := net.SplitHostPort(upstream)
	if err != nil {
		return nil, err
	}
	return func(ctx context.Context) ([]string, error) {
		ips, err := net.DefaultResolver.LookupHost(ctx, host)
		if err != nil {
			return nil, err
		}
		addrs := make([]string, len(ips))
		for i, ip := range ips {
			addrs[i] = net.JoinHostPort(ip, port)
		}
		slices.Sort(addrs)
		return addrs, nil
	}, nil
}

// refresh resolves the upstream again. On an error it keeps the addresses
// it has: a resolver that fails for a moment must not stop the traffic.
func (b *balancer) refresh(ctx context.Context) error {
	addrs, err := b.resolve(ctx)
	if err != nil {
		return err
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !slices.Equal(addrs, b.addrs) {
		b.log.Info("upstreams", "addrs", strings.Join(addrs, ","))
		b.addrs = addrs
	}
	return nil
}

// run refreshes the addresses every interval until ctx is done.
func (b *balancer) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		rctx, cancel := context.WithTimeout(ctx, every+time.Second)
		err := b.refresh(rctx)
		cancel()
		if err != nil && !failing {
			b.log.Warn("resolve upstream failed; keeping the last addresses", "err", err)
		} else if err == nil && failing {
			b.log.Info("resolve upstream works again")
		}
		failing = err != nil
	}
}

// order returns the addresses to try for one request: round robin, and
// those whose dial failed within downFor last.
func (b *balancer) order() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := len(b.addrs)
	if n == 0 {
		return nil
	}
	start := int((b.next.Add(1) - 1) % uint64(n))
	up := make([]string, 0, n)
	var down []string
	now := time.Now()
	for i := range n {
		a := b.addrs[(start+i)%n]
		if at, ok := b.down[a]; ok && now.Sub(at) < b.downFor {
			down = append(down, a)
			continue
		}
		up = append(up, a)
	}
	return append(up, down...)
}

func (b *balancer) setDown(addr string, isDown bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if isDown {
		b.down[addr] = time.Now()
	} else {
		delete(b.down, addr)
	}
}

// RoundTrip sends req to one upstream address after the other until a
// connection is made.
func (b *balancer) RoundTrip(req *http.Request) (*http.Response, error) {
	addrs := b.order()
	if len(addrs) == 0 {
		return nil, errNoUpstream
	}
	var body *unsentBody
	if req.Body != nil && req.Body != http.NoBody {
		body = &unsentBody{rc: req.Body}
	}
	var errs []error
	for _, addr := range addrs {
		out := req.Clone(req.Context())
		out.URL.Host = addr
		if body != nil {
			out.Body = body
			// Lets the transport send the request again on another
			// connection when nothing of it was written.
			out.GetBody = body.again
		}
		resp, err := b.transport.RoundTrip(out)
		if err == nil {
			b.setDown(addr, false)
			return resp, nil
		}
		if !notSent(err) || (body != nil && body.read.Load()) || req.Context().Err() != nil {
			return nil, err
		}
		b.setDown(addr, true)
		b.log.Warn("gateway refused the connection; trying the next", "addr", addr, "err", err)
		errs = append(errs, err)
	}
	return nil, &refusedError{errors.Join(errs...)}
}

// notSent reports whether err says that no connection was made, so that
// nothing of the request was sent.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// refusedError: every address refused the connection.
type refusedError struct{ err error }

func (e *refusedError) Error() string {
	return "every gateway refused the connection: " + e.err.Error()
}
func (e *refusedError) Unwrap() error { return e.err }

// unsentBody is a request body that can be handed to another attempt while
// none of it has been read. The transport closes a request's body when a
// dial fails; the server closes the real one when the handler returns.
type unsentBody struct {
	rc   io.ReadCloser
	read atomic.Bool
}

func (u *unsentBody) Read(p []byte) (int, error) {
	u.read.Store(true)
	return u.rc.Read(p)
}

func (u *unsentBody) Close() error { return nil }

func (u *unsentBody) again() (io.ReadCloser, error) {
	if u.read.Load() {
		return nil, errors.New("the request body was read already")
	}
	return u, nil
}

// proxy is the reverse proxy over b. Streamed answers (SSE) are flushed as
// they come, and nothing here times out a request: a chat completion may
// wait minutes, and the gateway has its own deadline.
func proxy(b *balancer, log *slog.Logger) *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = "gateway" // replaced by the balancer per attempt
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport:     b,
		FlushInterval: -1,
		ErrorLog:      slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the caller went away
			}
			var refused *refusedError
			e := &schema.Error{Status: http.StatusBadGateway, Type: schema.TypeServer, Code: CodeGatewayError,
				Message: "The connection to the gateway broke before it answered; the request may have been accepted."}
			if errors.Is(err, errNoUpstream) || errors.As(err, &refused) {
				e = &schema.Error{Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: CodeNoGateway,
					Message: "No gateway accepted the connection; the request was not sent. Send it again.", RetryAfter: 1}
			}
			log.Warn("proxy error", "method", r.Method, "path", r.URL.Path, "status", e.Status, "err", err)
			writeError(w, e)
		},
	}
}

func writeError(w http.ResponseWriter, e *schema.Error) {
	w.Header().Set("Content-Type", "application/json")
	if e.RetryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(e.RetryAfter))
	}
	w.WriteHeader(e.Status)
	b, _ := e.MarshalJSON()
	_, _ = w.Write(b)
}
