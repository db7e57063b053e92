package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/schema"
)

// The NATS request/reply endpoint, for programs that want to wait for an
// answer without HTTP. It is a nats.go/micro service, so `nats micro ls`,
// `nats micro info` and `nats micro stats` discover and measure it:
//
//	service  MicroServiceName, version MicroConfig.Version
//	endpoint "chat" on MicroConfig.Subject, queue group micro.DefaultQueueGroup
//	         (every gateway joins it; NATS hands each request to one of them)
//
// A request is an OpenAI chat request, exactly as POST /v1/chat/completions
// takes it, with the same catalogue, limits and refusals; "stream": true is
// refused, because a reply is one message. Headers, all optional, as on
// HTTP: X-Request-Timeout or X-Litellm-Timeout (seconds; default the
// model's timeout), X-Laas-Bridge-Lane, Idempotency-Key.
//
// The reply is the chat.completion JSON, or OpenAI's error body with micro's
// error headers: Nats-Service-Error-Code holds the HTTP status and
// Nats-Service-Error the message. Every reply carries X-Request-Id; replies
// from a worker carry the X-Laas-Bridge-* timing headers, errors that can
// be retried Retry-After. An answer too large for one NATS message stays in
// the LAAS_BODIES object store: the reply is then empty and its
// HeaderCompletionRef header names the object, which the caller reads and
// deletes (it expires with the bucket's TTL otherwise).
//
// The endpoint trusts NATS's own authorization: whoever may publish on the
// subject may ask (restrict it with NATS permissions), as the admin. A
// request may carry "Authorization: Bearer <key>" as a NATS header: a
// virtual key's request then gets that key's model access and limits, and
// an unknown, blocked or expired key is refused with 401 as over HTTP.
//
// micro runs an endpoint's handler for one message at a time. A chat
// request waits seconds for LaaS, so the handler checks the request in line
// (a refusal is answered there, and micro counts it in num_errors), then
// waits for the answer in a goroutine of its own. Answers sent from there
// are not seen by micro's own counters; the endpoint's stats data counts
// them (MicroStats).

// MicroServiceName is the micro service's name, for `nats micro info`.
const MicroServiceName = "laas-bridge"

// MicroEndpointName is the chat endpoint's name within the service.
const MicroEndpointName = "chat"

// DefaultMicroSubject is MicroConfig.Subject's default.
const DefaultMicroSubject = "laas.api.chat"

// HeaderCompletionRef, on a reply over NATS, names the object in the
// LAAS_BODIES object store that holds an answer too large for a message.
const HeaderCompletionRef = "Laas-Bridge-Completion-Ref"

// MicroConfig configures the NATS request/reply endpoint.
type MicroConfig struct {
	// Disabled turns the endpoint off.
	Disabled bool
	// Subject is where requests are taken; default DefaultMicroSubject.
	Subject string
	// Version is the service's version, SemVer; default "0.0.0-dev".
	Version string
	// MaxInFlight caps the callers the endpoint answers at once (each
	// waits for its answer in a goroutine of its own); one more is refused
	// with a 503 server_overloaded error reply. Default
	// DefaultMicroMaxInFlight.
	MaxInFlight int
	// ReplyPrefixes are the reply subjects the endpoint answers to: a
	// request whose reply subject starts with none of them is dropped
	// (logged, counted), because the answer is published with the
	// gateway's own NATS rights and must land only in a caller's inbox,
	// never on a subject of the bridge's own. Default DefaultReplyPrefix.
	ReplyPrefixes []string
}

// DefaultMicroMaxInFlight is MicroConfig.MaxInFlight's default.
const DefaultMicroMaxInFlight = 1024

// DefaultReplyPrefix is MicroConfig.ReplyPrefixes's default: the inbox
// prefix NATS clients use unless told otherwise.
const DefaultReplyPrefix = "_INBOX."

func (c *MicroConfig) setDefaults() {
	if c.Subject == "" {
		c.Subject = DefaultMicroSubject
	}
	if c.Version == "" {
		c.Version = "0.0.0-dev"
	}
	if len(c.ReplyPrefixes) == 0 {
		c.ReplyPrefixes = []string{DefaultReplyPrefix}
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMicroMaxInFlight
	}
}

// Validate reports an unusable subject.
func (c MicroConfig) Validate() error {
	if c.Disabled {
		return nil
	}
	if strings.ContainsAny(c.Subject, " \t\r\n*>") || strings.HasPrefix(c.Subject, ".") || strings.HasSuffix(c.Subject, ".") || strings.Contains(c.Subject, "..") {
		return fmt.Errorf("micro endpoint subject %q must be a NATS subject without wildcards", c.Subject)
	}
	if strings.HasPrefix(c.Subject, schema.SubjectRequests+".") || strings.HasPrefix(c.Subject, "laas.reply.") {
		return fmt.Errorf("micro endpoint subject %q is inside the bridge's queue subjects", c.Subject)
	}
	var errs []error
	if c.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("micro endpoint max in flight must not be negative, got %d", c.MaxInFlight))
	}
	for _, p := range c.ReplyPrefixes {
		if !strings.HasSuffix(p, ".") || len(p) < 2 || strings.ContainsAny(p, " \t\r\n*>") || strings.HasPrefix(p, "laas.") || strings.HasPrefix(p, "$") {
			errs = append(errs, fmt.Errorf("micro reply prefix %q must be a subject prefix ending in \".\", outside laas.> and $...", p))
		}
	}
	return errors.Join(errs...)
}

// replyAllowed reports whether a request's reply subject is in a caller's
// inbox space (MicroConfig.ReplyPrefixes), with no wildcard in it.
func (c MicroConfig) replyAllowed(reply string) bool {
	if reply == "" || strings.ContainsAny(reply, "*> \t\r\n") {
		return false
	}
	for _, p := range c.ReplyPrefixes {
		if strings.HasPrefix(reply, p) && len(reply) > len(p) {
			return true
		}
	}
	return false
}

// MicroStats is the data of the chat endpoint in `nats micro stats`: the
// answers sent after a request was queued, which micro does not count.
type MicroStats struct {
	// Waiting is how many callers wait for an answer now.
	Waiting int64 `json:"waiting"`
	// Completions counts chat.completion answers.
	Completions int64 `json:"completions"`
	// Errors counts error answers sent after the request was queued
	// (timeouts, LaaS errors, a full queue, shutdown).
	Errors int64 `json:"errors"`
}

// microEndpoint is the gateway's micro service and its waiting callers.
type microEndpoint struct {
	g       *Gateway
	svc     micro.Service
	calls   callers
	waiting atomic.Int64
	done    atomic.Int64 // completions
	failed  atomic.Int64
	count   *prometheus.CounterVec // nil: no metrics
}

// startMicro adds the micro service on g's connection; nil when disabled.
func (g *Gateway) startMicro() (*microEndpoint, error) {
	if g.cfg.Micro.Disabled {
		return nil, nil
	}
	m := &microEndpoint{g: g}
	if g.cfg.Metrics != nil {
		m.count = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "laas_bridge", Subsystem: "gateway", Name: "nats_requests_total",
			Help: "Chat requests answered on the NATS micro endpoint, by model alias and HTTP status."}, []string{"model", "status"})
		if err := g.cfg.Metrics.Register(m.count); err != nil {
			are, ok := errors.AsType[prometheus.AlreadyRegisteredError](err)
			if !ok {
				return nil, fmt.Errorf("gateway metrics: %w", err)
			}
			m.count = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	svc, err := micro.AddService(g.nc, micro.Config{
		Name:        MicroServiceName,
		Version:     g.cfg.Micro.Version,
		Description: "OpenAI chat completions over NATS request/reply: send a chat request, receive a chat.completion or an OpenAI error body",
		Metadata:    map[string]string{"gateway": g.cfg.InstanceID},
		StatsHandler: func(*micro.Endpoint) any {
			return MicroStats{Waiting: m.waiting.Load(), Completions: m.done.Load(), Errors: m.failed.Load()}
		},
		ErrorHandler: func(_ micro.Service, err *micro.NATSError) {
			g.log.Error("NATS endpoint error", "subject", err.Subject, "error", err.Description)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("NATS endpoint: %w", err)
	}
	err = svc.AddEndpoint(MicroEndpointName, micro.HandlerFunc(m.handle),
		micro.WithEndpointSubject(g.cfg.Micro.Subject),
		micro.WithEndpointMetadata(map[string]string{
			"request":  "OpenAI chat request (stream: false)",
			"response": "chat.completion, or an OpenAI error body with Nats-Service-Error-Code = HTTP status",
			"headers":  "Authorization, " + HeaderRequestTimeout + ", " + HeaderLiteLLMTimeout + ", " + HeaderLane + ", " + HeaderIdempotencyKey,
		}))
	if err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("NATS endpoint on %s: %w", g.cfg.Micro.Subject, err)
	}
	m.svc = svc
	g.log.Info("NATS endpoint listening", "subject", g.cfg.Micro.Subject, "service", MicroServiceName)
	return m, nil
}

// stop takes no more requests; callers already taken keep waiting (see wait).
func (m *microEndpoint) stop() {
	if m == nil {
		return
	}
	if err := m.svc.Stop(); err != nil {
		m.g.log.Warn("could not stop the NATS endpoint", "error", err)
	}
	m.calls.close()
}

// wait returns once every caller taken has its answer, or with ctx's error.
func (m *microEndpoint) wait(ctx context.Context) error {
	if m == nil {
		return nil
	}
	return m.calls.wait(ctx)
}

// handle checks a request in line with the admission core's cheap checks
// (a refusal is answered there) and leaves the rest, the multimodal check,
// the queue and the wait, to a goroutine.
func (m *microEndpoint) handle(r micro.Request) {
	a := m.startAccess(r)
	if reply := r.Reply(); reply != "" && !m.g.cfg.Micro.replyAllowed(reply) {
		// Answering would publish, with the gateway's rights, wherever the
		// caller pointed: say nothing there.
		m.g.log.Warn("NATS request dropped: its reply subject is not in a caller's inbox space", "reply_prefixes", strings.Join(m.g.cfg.Micro.ReplyPrefixes, ","))
		err := &schema.Error{Status: http.StatusForbidden, Type: schema.TypeInvalidRequest, Message: "reply subject refused"}
		m.record(ModelUnknown, err)
		m.finishAccess(a, "", nil, err, 0)
		return
	}
	id := schema.NewID()
	hdr := nats.Header{HeaderRequestID: []string{id}}
	ck, model, err := m.check(id, r)
	if err == nil {
		err = m.calls.add(m.g.cfg.Micro.MaxInFlight)
		if se, ok := errors.AsType[*schema.Error](err); ok && se.Code == CodeServerOverloaded {
			m.g.metrics.refused(limitMicro)
		}
	}
	if err != nil {
		m.g.log.Debug("NATS request refused", "request_id", id, "error", err)
		m.record(model, err)
		data, code, desc := m.errorBody(id, err, hdr)
		_ = r.Error(code, desc, data, micro.WithHeaders(micro.Headers(hdr)))
		if a != nil {
			a.RequestID = id
			m.finishAccess(a, model, ck, err, len(data))
		}
		return
	}
	m.waiting.Add(1)
	reply := r.Reply() // the goroutine keeps the subject, not the message and its body
	go func() {
		defer m.calls.done()
		defer m.waiting.Add(-1)
		m.answer(reply, ck, hdr, a)
	}()
}

// check runs the admission core's cheap checks on a request; model is the
// alias for metrics.
func (m *microEndpoint) check(id string, r micro.Request) (ck *admission.Checked, model string, err error) {
	g := m.g
	model = ModelUnknown
	if r.Reply() == "" {
		return nil, model, schema.Invalid("", schema.CodeInvalidValue, "Send chat requests on %s as NATS requests (with a reply subject); nobody would receive this answer.", g.cfg.Micro.Subject)
	}
	h := httpHeader(r.Headers())
	req, err := g.request(id, admission.DoorMicro, h, r.Data())
	if err != nil {
		return nil, model, err
	}
	// NATS's own authorization lets the caller in; a key in the
	// Authorization header, when there is one, says who it is.
	if auth := h.Get("Authorization"); auth != "" {
		if req.Caller, err = g.callerFor(auth); err != nil {
			return nil, model, err
		}
	}
	ck, err = g.core.Check(req)
	if ck.Chat != nil {
		if mod, ok := g.core.Catalog().Lookup(ck.Chat.Model); ok {
			model = mod.Alias
		}
	}
	return ck, model, err
}

// answer queues a checked request, waits for its answer and sends it.
func (m *microEndpoint) answer(reply string, ck *admission.Checked, hdr nats.Header, a *access) {
	data, err := m.complete(ck, hdr, a)
	msg := &nats.Msg{Subject: reply, Header: hdr, Data: data}
	if err != nil {
		m.failed.Add(1)
		msg.Data, _, _ = m.errorBody(ck.ID, err, hdr)
	} else {
		m.done.Add(1)
	}
	m.record(ck.Model.Alias, err)
	if err := m.g.nc.PublishMsg(msg); err != nil {
		m.g.log.Warn("could not send an answer over NATS", "request_id", ck.ID, "error", err)
	}
	if a != nil {
		a.RequestID = ck.ID
		m.finishAccess(a, ck.Model.Alias, ck, err, len(msg.Data))
	}
}

// complete admits the request (multimodal check, a kept idempotent answer,
// the queue) and waits for its answer.
func (m *microEndpoint) complete(ck *admission.Checked, hdr nats.Header, a *access) ([]byte, error) {
	g := m.g
	ctx, cancel := context.WithTimeout(context.Background(), ck.Timeout)
	defer cancel()
	p, replayed, err := g.admit(ctx, ck)
	if err != nil {
		return nil, err
	}
	if replayed {
		hdr.Set(HeaderIdempotentReplayed, "true")
	}
	if p.release != nil {
		defer p.release()
	}
	// The body is queued (or answered): hold none of it while waiting.
	ck.Body, ck.Chat = nil, nil
	defer g.metrics.callerWaiting()()
	timer := time.NewTimer(time.Until(p.deadline))
	defer timer.Stop()
	select {
	case raw := <-p.answer:
		return m.decode(raw, hdr, a)
	case <-timer.C:
		return nil, p.expired()
	case <-g.closing:
		if ck.AnswerKey == "" { // nobody will read the answer: stop the job
			g.cancelJob(p.id, p.deadline)
		}
		return nil, shuttingDown()
	}
}

// decode turns a worker's reply into the answer's body and headers: the
// chat.completion JSON, or nil with HeaderCompletionRef set for an answer
// too large for a message. It notes the reply's timing and usage in a,
// when set.
func (m *microEndpoint) decode(raw []byte, hdr nats.Header, a *access) ([]byte, error) {
	var rep schema.Reply
	if err := json.Unmarshal(raw, &rep); err != nil {
		return nil, fmt.Errorf("decode reply: %w", err)
	}
	if a != nil {
		a.SetReply(&rep)
		if rep.Completion != nil {
			a.SetUsage(rep.Completion.Usage)
		}
	}
	hdr.Set(HeaderQueueMs, strconv.FormatInt(rep.QueueMs, 10))
	hdr.Set(HeaderUpstreamMs, strconv.FormatInt(rep.UpstreamMs, 10))
	hdr.Set(HeaderAttempts, strconv.Itoa(rep.Attempts))
	if err := rep.Err(); err != nil {
		return nil, err
	}
	if rep.CompletionRef != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		info, err := m.g.bodies.GetInfo(ctx, rep.CompletionRef)
		if err != nil {
			return nil, fmt.Errorf("large answer %s: %w", rep.CompletionRef, err)
		}
		if int64(info.Size) > m.inlineMax() { // the caller claims it
			hdr.Set(HeaderCompletionRef, rep.CompletionRef)
			return nil, nil
		}
		data, err := m.g.claimCompletion(ctx, rep.CompletionRef)
		if a != nil && err == nil {
			a.SetUsageJSON(data)
		}
		return data, err
	}
	if rep.Completion == nil {
		return nil, errors.New("reply has neither completion nor error")
	}
	data, err := json.Marshal(rep.Completion)
	if err != nil {
		return nil, fmt.Errorf("encode answer: %w", err)
	}
	return data, nil
}

// inlineMax is the largest answer sent inside a reply message: the
// connection's max payload less room for the headers.
func (m *microEndpoint) inlineMax() int64 { return m.g.nc.MaxPayload() - 16<<10 }

// errorBody returns OpenAI's error body for err and sets micro's error
// headers (and Retry-After) on hdr; code and desc are those headers' values.
// It logs server errors once, as the HTTP error handler does.
func (m *microEndpoint) errorBody(id string, err error, hdr nats.Header) (data []byte, code, desc string) {
	e := microError(err)
	if e.Status >= 500 {
		m.g.log.Error("request failed", "request_id", id, "status", e.Status, "code", e.Code, "error", e.Message, "cause", e.Cause)
	}
	code = strconv.Itoa(e.Status)
	// A header value is one line.
	desc = strings.Join(strings.Fields(e.Message), " ")
	if desc == "" {
		desc = http.StatusText(e.Status)
	}
	hdr.Set(micro.ErrorCodeHeader, code)
	hdr.Set(micro.ErrorHeader, desc)
	if e.RetryAfter > 0 {
		hdr.Set("Retry-After", itoa(e.RetryAfter))
	}
	data, _ = json.Marshal(e.Body())
	return data, code, desc
}

// record counts an answer in the gateway's metrics.
func (m *microEndpoint) record(model string, err error) {
	if m.count == nil {
		return
	}
	status := http.StatusOK
	if err != nil {
		status = microError(err).Status
	}
	m.count.WithLabelValues(model, strconv.Itoa(status)).Inc()
}

// microError is the OpenAI error a NATS caller gets for err.
func microError(err error) *schema.Error {
	if mbe, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return &schema.Error{Status: http.StatusRequestEntityTooLarge, Type: schema.TypeInvalidRequest, Code: schema.CodeRequestTooLarge,
			Message: "The request body is larger than the " + itoa(int(mbe.Limit)) + " bytes this bridge accepts."}
	}
	return schema.AsError(err)
}

// httpHeader copies NATS headers into an http.Header, whose Get ignores
// case as HTTP's does, so the HTTP header checks apply unchanged.
func httpHeader(h micro.Headers) http.Header {
	out := make(http.Header, len(h))
	for k, vs := range h {
		for _, v := range vs {
			out.Add(k, v)
		}
	}
	return out
}

// callers counts the NATS callers being answered. Once closed it takes
// none, so wait cannot miss one that arrives while it waits. Safe for
// concurrent use.
type callers struct {
	mu     sync.Mutex
	n      int
	closed bool
	idle   chan struct{} // closed when n drops to 0; nil until wait needs it
}

// add takes a caller, when fewer than limit are being answered; once
// closed it takes none (the error is shuttingDown, else overloaded).
func (c *callers) add(limit int) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return shuttingDown()
	}
	if c.n >= limit {
		return overloaded("NATS callers")
	}
	c.n++
	return nil
}

func (c *callers) done() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.n--
	if c.n == 0 && c.idle != nil {
		close(c.idle)
		c.idle = nil
	}
}

func (c *callers) close() {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
}

// wait returns when no caller is left, or with ctx's error.
func (c *callers) wait(ctx context.Context) error {
	c.mu.Lock()
	if c.n == 0 {
		c.mu.Unlock()
		return nil
	}
	if c.idle == nil {
		c.idle = make(chan struct{})
	}
	idle := c.idle
	c.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
