// Package admission is the one way into the queue. Every door (HTTP chat
// completions, HTTP async jobs, Batch API lines, the NATS micro endpoint,
// direct NATS producers, dead-letter replay) hands the core the raw request
// bytes and what it knows of the caller (a Request), and gets back either a
// Ticket (the job is durably queued, or its answer is already kept) or a
// *schema.Error to map back to its own transport.
//
// The core does, once and in this order: decode, validate, catalogue
// lookup, preset policy, stream policy, timeout, idempotency key; then, in
// Admit, the multimodal check (images and PDFs, see package multimodal),
// the kept-answer lookup, the claim check of a body too large for a NATS
// message, the envelope, and the publish with failover across a stream
// leader election, with a full or unreachable queue mapped to OpenAI's
// errors.
//
// Fields that decide whose data is whose are set here and never taken from
// a caller: the stored-answer key (AnswerKey: the caller's key, namespaced
// and hashed with the body), the large-body reference (the request id),
// the reply subject (the door's own), the Nats-Msg-Id. Workers trust what
// the core wrote: nothing is checked twice.
//
// The package knows nothing of HTTP or echo; doors translate their
// transport into a Request and the core's errors back.
package admission
