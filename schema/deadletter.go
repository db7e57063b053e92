package schema

import (
	"encoding/base64"
	"encoding/json"
	"strings"
	"time"
	"unicode"
)

// CodeMaxDeliveries is the reason code of a dead letter whose job was
// delivered MaxDeliver times without a worker finishing it (a worker
// crashed, hung or was stopped on every attempt).
const CodeMaxDeliveries = "max_deliveries_reached"

// DeadLetterRecord is the body of a message on StreamDead: a job that ran
// out of attempts, kept for inspection and replay. Programs other than the
// bridge may read it; fields are only ever added.
type DeadLetterRecord struct {
	// ID is the request id (Envelope.ID).
	ID string `json:"id"`
	// Model is the public model alias the request asked for.
	Model string `json:"model"`
	// Request is the OpenAI chat completion request as the caller sent it.
	// Absent when RequestRef is set.
	Request json.RawMessage `json:"request,omitempty"`
	// RequestRef names the object in BucketBodies (<id>.dead) that holds a
	// request too large to keep inline. That bucket's TTL bounds how long
	// the body outlives its dead letter.
	RequestRef string `json:"request_ref,omitempty"`
	// Owner is the virtual key that sent it (Envelope.Owner), "" for the
	// admin; a replay is still that key's.
	Owner string `json:"owner,omitempty"`
	// Reason is the last error, as the caller got it.
	Reason DeadLetterReason `json:"reason"`
	// Attempts is how many times the job was delivered to a worker.
	Attempts int `json:"attempts"`
	// EnqueuedAt and Deadline come from the envelope.
	EnqueuedAt time.Time `json:"enqueued_at,omitzero"`
	Deadline   time.Time `json:"deadline,omitzero"`
	// LastAttempt is when the last upstream call started; absent when it is
	// not known (a job that reached MaxDeliver without a worker finishing it).
	LastAttempt time.Time `json:"last_attempt,omitzero"`
	// FailedAt is when the job was given up.
	FailedAt time.Time `json:"failed_at"`
}

// DeadLetterReason is why a job was given up: the HTTP status and OpenAI
// error body its caller got, or would have got.
type DeadLetterReason struct {
	Status int         `json:"status"`
	Error  ErrorDetail `json:"error"`
}

// DeadLetterSubject is the subject of id's dead letter: SubjectDead.<id>.
// An id that is not a plain subject token (empty, or holding '.', '*', '>',
// white space or a control character) is written as "_b64_" and its
// unpadded base64url form.
func DeadLetterSubject(id string) string {
	plain := id != "" && !strings.HasPrefix(id, "_b64_") && !strings.ContainsFunc(id, func(r rune) bool {
		return r <= ' ' || r == 0x7f || r == '.' || r == '*' || r == '>' || unicode.IsSpace(r)
	})
	if !plain {
		return SubjectDead + "._b64_" + base64.RawURLEncoding.EncodeToString([]byte(id))
	}
	return SubjectDead + "." + id
}
