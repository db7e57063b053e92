package worker

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

func TestClaimBody(t *testing.T) {
	body := []byte(`{"model":"m","messages":[{"role":"user","content":"big"}]}`)
	for _, tc := range []struct {
		name     string
		ref      string
		stored   bool
		storeErr error
		attempt  int
		next     bool
		acks     string
		status   int // of the reply; 0: none
	}{
		{"no large body: runs", "", false, nil, 1, true, "[]", 0},
		{"large body: read into the envelope", "r1", true, nil, 1, true, "[]", 0},
		{"body gone: 500, not retried", "r1", false, nil, 1, false, "[ack]", http.StatusInternalServerError},
		{"store unavailable: handed back for a second", "r1", true, errors.New("timeout"), 1, false, "[nak 1s]", 0},
		{"store unavailable on the last attempt: 500", "r1", true, errors.New("timeout"), 3, false, "[ack]", http.StatusInternalServerError},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStepFixture(t)
			if tc.stored {
				f.bodies.objects["r1"] = body
			}
			f.bodies.err = tc.storeErr
			j, msg := stepJob(t, schema.SubjectInteractive, tc.attempt)
			j.env.RequestRef = tc.ref
			if tc.ref != "" {
				j.env.Request = nil
			}
			var next nextRecorder
			f.p.claimBody(next.handle)(context.Background(), j)
			if (next.called() == 1) != tc.next || msg.settled() != tc.acks {
				t.Fatalf("next called %d, settled %s; want next %v, %s", next.called(), msg.settled(), tc.next, tc.acks)
			}
			if tc.next && tc.ref != "" && string(j.env.Request) != string(body) {
				t.Errorf("request = %s, want the stored body", j.env.Request)
			}
			if tc.status != 0 {
				if r := f.onlyReply(t); r.Status != tc.status {
					t.Errorf("reply %d, want %d", r.Status, tc.status)
				}
			} else if n := len(f.replies(t)); n != 0 {
				t.Errorf("%d replies, want none", n)
			}
		})
	}
}

// TestClaimTimeoutFor: a large body's fetch may take 30 s and a second
// more per MiB, as its store by the gateway may: a flat 30 s failed every
// attempt at a 40 MB body on a busy machine, and its caller got a 500.
func TestClaimTimeoutFor(t *testing.T) {
	for _, tc := range []struct {
		size uint64
		want time.Duration
	}{
		{0, 30 * time.Second},
		{1 << 20, 31 * time.Second},
		{43 << 20, 73 * time.Second},
	} {
		if got := claimTimeoutFor(tc.size); got != tc.want {
			t.Errorf("claimTimeoutFor(%d) = %s, want %s", tc.size, got, tc.want)
		}
	}
}
