package bridge

// Idempotency headers: a request with an Idempotency-Key is run at most once
// per key and body (within the queue's de-duplication window, and within the
// answers bucket's TTL once finished); a retry gets the first call's answer,
// marked with Idempotent-Replayed: true when it comes from the store. The
// admission core namespaces and hashes the key (admission.AnswerKey).
const (
	HeaderIdempotencyKey     = "Idempotency-Key"
	HeaderIdempotentReplayed = "Idempotent-Replayed"
)
