package worker

import (
	"context"
	"errors"
	"testing"

	"github.com/laas-bridge/laas-bridge/schema"
)

func TestAnswerFromStore(t *testing.T) {
	kept := []byte(`{"id":"first","status":200}`)
	for _, tc := range []struct {
		name    string
		key     string
		stored  bool
		sendErr error
		next    bool
		acks    string
		sent    string // the reply sent, verbatim
	}{
		{"kept answer: sent as kept, LaaS not called", "k1", true, nil, false, "[ack]", string(kept)},
		{"no key: runs", "", true, nil, true, "[]", ""},
		{"key with no kept answer: runs", "k2", false, nil, true, "[]", ""},
		{"kept answer that cannot be sent: handed back for a second", "k1", true, errors.New("no gateway"), false, "[nak 1s]", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStepFixture(t)
			if tc.stored {
				f.answers.values["k1"] = kept
			}
			f.sendErr = tc.sendErr
			j, msg := stepJob(t, schema.SubjectInteractive, 1)
			j.env.IdempotencyKey = tc.key
			var next nextRecorder
			f.p.answerFromStore(next.handle)(context.Background(), j)
			if (next.called() == 1) != tc.next || msg.settled() != tc.acks {
				t.Fatalf("next called %d, settled %s; want next %v, %s", next.called(), msg.settled(), tc.next, tc.acks)
			}
			var sent string
			if len(f.sent) == 1 {
				sent = string(f.sent[0].data)
			}
			if sent != tc.sent || len(f.sent) > 1 {
				t.Errorf("sent %d replies (%q), want %q", len(f.sent), sent, tc.sent)
			}
		})
	}
}
