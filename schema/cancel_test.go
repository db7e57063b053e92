package schema

import (
	"testing"
	"time"
)

func TestCancelPayload(t *testing.T) {
	deadline := time.Date(2026, 1, 2, 3, 4, 5, 6, time.FixedZone("x", 3600))
	got, ok := CancelDeadline(CancelPayload(deadline))
	if !ok || !got.Equal(deadline) {
		t.Errorf("round trip of %s: %s, %v", deadline, got, ok)
	}
	for _, tc := range []struct {
		name    string
		payload []byte
	}{
		{"empty (an older gateway)", nil},
		{"zero deadline", CancelPayload(time.Time{})},
		{"not a time", []byte("soon")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if d, ok := CancelDeadline(tc.payload); ok {
				t.Errorf("CancelDeadline(%q) = %s, true; want no deadline", tc.payload, d)
			}
		})
	}
}
