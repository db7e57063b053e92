package schema_test

import (
	"encoding/base64"
	"testing"

	"github.com/laas-bridge/laas-bridge/schema"
)

func TestDeadLetterNames(t *testing.T) {
	// Other programs read these names: changing one breaks them.
	for _, tc := range []struct{ name, got, want string }{
		{"stream", schema.StreamDead, "LAAS_DEAD"},
		{"subject prefix", schema.SubjectDead, "laas.dead"},
		{"batch lane (replays)", schema.SubjectBatch, "laas.requests.lane.batch"},
		{"reason code", schema.CodeMaxDeliveries, "max_deliveries_reached"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestDeadLetterSubject(t *testing.T) {
	b64 := func(id string) string { return "laas.dead._b64_" + base64.RawURLEncoding.EncodeToString([]byte(id)) }
	for _, tc := range []struct{ name, id, want string }{
		{"gateway id (nuid)", "Kx7pA3hZ9qN2mB5cD8eF1g", "laas.dead.Kx7pA3hZ9qN2mB5cD8eF1g"},
		{"dashes and underscores", "job-42_a", "laas.dead.job-42_a"},
		{"dot", "batch.7", b64("batch.7")},
		{"wildcards", "a*b>", b64("a*b>")},
		{"space", "a b", b64("a b")},
		{"tab", "a\tb", b64("a\tb")},
		{"non-breaking space", "a\u00a0b", b64("a\u00a0b")},
		{"control character", "a\x01b", b64("a\x01b")},
		{"empty", "", "laas.dead._b64_"},
		{"looks encoded already", "_b64_YQ", b64("_b64_YQ")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := schema.DeadLetterSubject(tc.id); got != tc.want {
				t.Errorf("DeadLetterSubject(%q) = %q, want %q", tc.id, got, tc.want)
			}
		})
	}
}
