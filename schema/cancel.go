package schema

import "time"

// A cancellation (SubjectCancel.<request id>, core NATS) may carry the
// job's deadline as its payload, so workers forget the id once no worker
// could start the job anyway (an async job's cancel names its latest
// deadline, queued + MaxRequestTimeout; a batch line's, the batch's
// expiry). An empty payload (older gateways and producers) names no
// deadline: workers then remember the id for the longest timeout a request
// may have.

// CancelPayload is the payload of a cancellation of a job whose deadline is
// deadline: the time in RFC 3339 with nanoseconds, UTC. A zero deadline
// gives an empty payload.
func CancelPayload(deadline time.Time) []byte {
	if deadline.IsZero() {
		return nil
	}
	return deadline.UTC().AppendFormat(nil, time.RFC3339Nano)
}

// CancelDeadline reads a cancellation's payload; ok is false when it names
// no deadline (empty, or not a time).
func CancelDeadline(payload []byte) (deadline time.Time, ok bool) {
	if len(payload) == 0 {
		return time.Time{}, false
	}
	t, err := time.Parse(time.RFC3339Nano, string(payload))
	if err != nil {
		return time.Time{}, false
	}
	return t, true
}
