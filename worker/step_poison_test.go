package worker

import (
	"context"
	"testing"

	"github.com/laas-bridge/laas-bridge/schema"
)

func TestRecoverPoison(t *testing.T) {
	for _, tc := range []struct {
		name string
		next handlerFunc
		acks string
	}{
		{"a panic terminates the delivery", func(context.Context, *job) { panic("boom") }, "[term]"},
		{"no panic: the delivery is next's", func(context.Context, *job) {}, "[]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStepFixture(t)
			j, msg := stepJob(t, schema.SubjectInteractive, 1)
			f.p.recoverPoison(tc.next)(context.Background(), j)
			if got := msg.settled(); got != tc.acks {
				t.Errorf("settled %s, want %s", got, tc.acks)
			}
		})
	}
}
