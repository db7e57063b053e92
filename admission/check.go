package admission

import (
	"net/http"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Checked is a request that passed Check: what Admit needs to queue it.
// Its Request has the core's decisions filled in: Timeout (never 0) and
// Lane.
type Checked struct {
	Request
	// Chat is the decoded request.
	Chat *schema.ChatCompletionRequest
	// Model is the catalogue entry of Chat.Model.
	Model schema.Model
	// AnswerKey is where the worker keeps the answer of a request with an
	// idempotency key, else "".
	AnswerKey string
}

// Check runs the cheap checks on r, in this order: size, id, decode,
// validate, catalogue, the caller's key's model access, preset policy,
// stream policy, timeout, lane, reply subject and results subject,
// idempotency key. It does no I/O; Admit runs
// the costly multimodal check. A refusal is a *schema.Error (or an
// *http.MaxBytesError for an oversized body). The Checked it returns on a
// refusal holds whatever was decoded (Chat may be nil), for the door's
// metrics.
func (c *Core) Check(r Request) (*Checked, error) {
	ck := &Checked{Request: r}
	if int64(len(r.Body)) > c.cfg.MaxBodyBytes {
		return ck, &http.MaxBytesError{Limit: c.cfg.MaxBodyBytes}
	}
	if !schema.ValidRequestID(r.ID) {
		return ck, schema.Invalid("id", schema.CodeInvalidValue, "A request id must be 1-64 of [A-Za-z0-9_-], got %q.", r.ID)
	}
	req, err := schema.DecodeChatRequest(r.Body)
	if err != nil {
		return ck, err
	}
	ck.Chat = req
	if err := req.Validate(); err != nil {
		return ck, err
	}
	if err := c.currentKey(ck); err != nil {
		return ck, err
	}
	// A key's model list comes first, as in LiteLLM: a key learns nothing
	// of models outside it, not even whether they exist.
	if k := ck.Caller.Key; k != nil && !k.Allows(req.Model) {
		return ck, keys.ModelAccessDenied(k, req.Model)
	}
	model, ok := c.catalog.Load().Lookup(req.Model)
	if !ok {
		return ck, schema.ModelNotFound(req.Model)
	}
	ck.Model = model
	if req.PresetHash != "" && !c.cfg.AllowPresetOverride {
		return ck, schema.PresetOverrideDisabled()
	}
	if req.Stream && !r.Streamable {
		return ck, streamRefused(r.Door)
	}
	if err := c.resolve(ck); err != nil {
		return ck, err
	}
	return ck, nil
}

// resolve fills the fields the core decides: timeout, lane (the batch
// lane for service_tier flex), answer key;
// and checks the subjects a door named.
func (c *Core) resolve(ck *Checked) error {
	switch {
	case ck.Timeout < 0 || ck.Timeout > schema.MaxRequestTimeout:
		return schema.Invalid("", schema.CodeInvalidValue, "A request's timeout must be more than 0 and at most %s, got %s.", schema.MaxRequestTimeout, ck.Timeout)
	case ck.Timeout == 0 && ck.Job != nil:
		ck.Timeout = schema.MaxRequestTimeout
	case ck.Timeout == 0:
		ck.Timeout = ck.Model.Deadline()
	}
	// The flex tier is the batch lane, where a request over its key's rpm
	// waits for its turn instead of being refused.
	if ck.Chat != nil && ck.Chat.ServiceTier == schema.ServiceTierFlex {
		ck.Lane, ck.QueueWait = Batch, true
	}
	if ck.Lane == "" {
		ck.Lane = Interactive
		if ck.Job != nil || ck.Line != nil { // nobody waits on a connection
			ck.Lane = Batch
		}
	}
	if ck.Lane != Interactive && ck.Lane != Batch {
		return schema.Invalid("", schema.CodeInvalidValue, "A lane must be interactive or batch, got %q.", ck.Lane)
	}
	if ck.ReplyTo != "" && !schema.ValidReplySubject(ck.ReplyTo) {
		return schema.Invalid("", schema.CodeInvalidValue, "%q is not a reply subject of this bridge.", ck.ReplyTo)
	}
	if ck.Job != nil {
		if ck.Job.ResultsSubject != "" && !schema.ValidResultsSubject(ck.Job.ResultsSubject, ck.ID) {
			return schema.Invalid("results_subject", schema.CodeInvalidValue,
				"results_subject %q must be %s.<id> or %s.<1 to 8 tokens>.<id>, ending in the job id.", ck.Job.ResultsSubject, schema.SubjectResults, schema.SubjectResults)
		}
		return nil // a job's id is its key
	}
	if ck.Line != nil {
		ck.AnswerKey = BatchAnswerKey(ck.Line.BatchID, ck.Line.Line)
		return nil
	}
	if ck.IdempotencyKey != "" {
		if len(ck.IdempotencyKey) > MaxIdempotencyKeyLen {
			return schema.Invalid("", schema.CodeInvalidValue, "An idempotency key is %d bytes; at most %d are allowed.", len(ck.IdempotencyKey), MaxIdempotencyKeyLen)
		}
		ck.AnswerKey = AnswerKey(namespaceOf(ck.Door), ck.Caller.Owner(), ck.IdempotencyKey, ck.Body)
	}
	return nil
}

// MaxIdempotencyKeyLen bounds a caller's idempotency key.
const MaxIdempotencyKeyLen = 255

// streamRefused is the refusal of "stream": true at a door whose answer
// is one message.
func streamRefused(d Door) *schema.Error {
	switch d {
	case DoorBatch:
		return schema.Invalid("stream", schema.CodeInvalidValue, "a batch request cannot be streamed; remove 'stream'.")
	case DoorMicro:
		return &schema.Error{Status: http.StatusBadRequest, Type: schema.TypeInvalidRequest, Code: schema.CodeUnsupported, Param: "stream",
			Message: "'stream': true is not supported over NATS request/reply, whose answer is one message; leave it out, or stream over HTTP (POST /v1/chat/completions)."}
	}
	return &schema.Error{Status: http.StatusBadRequest, Type: schema.TypeInvalidRequest, Code: schema.CodeUnsupported, Param: "stream",
		Message: "'stream': true is not supported for a job, whose result is one message; leave it out, or stream over HTTP (POST /v1/chat/completions)."}
}
