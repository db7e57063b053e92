// Package batch runs OpenAI Batch API batches on the bridge's queue.
//
// Files (uploads, outputs, errors) live in the JetStream Object Store
// schema.BucketFiles; batch records in the KV bucket schema.BucketBatches.
// Every gateway process runs a Runner. A Runner takes a batch by writing its
// lease into the batch's record with compare-and-set, renews it every third
// of its TTL, and another Runner takes it over only once the lease is
// stale; so one Runner drives a batch at a time, and a batch whose Runner
// died resumes on any other, or on the same process after a restart.
//
// Each valid line is admitted through the admission core (its media were
// checked once, when the plan was made) onto the batch lane
// (schema.SubjectBatch) with the request id "<batch id>-<line>" and the
// answer key "batch.<batch id>.<line>" (admission.BatchAnswerKey; its
// Nats-Msg-Id is "idem." and that key): the worker keeps the line's
// answer under that key in schema.BucketAnswers and, for a job whose answer
// is already there, does not call LaaS again. The Runner learns of answers
// by watching those keys, publishes at most Window unanswered lines at a
// time, and records how far it has published; after a crash it publishes
// again only lines without an answer.
package batch
