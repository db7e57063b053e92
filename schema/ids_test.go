package schema

import (
	"slices"
	"strings"
	"testing"
)

// TestNewID: 26 characters of [a-z2-7] (128 bits), valid request ids, and
// random: across 1000 ids no character position is the same in all of
// them, and no two share more than a short prefix, as consecutive NUIDs or
// counters would.
func TestNewID(t *testing.T) {
	ids := make([]string, 1000)
	for i := range ids {
		ids[i] = NewID()
		if !ValidRequestID(ids[i]) {
			t.Fatalf("NewID() = %q is not a valid request id", ids[i])
		}
	}
	checkRandomIDs(t, ids)
}

// checkRandomIDs asserts that ids (the random parts of ids, their fixed
// prefix removed) are IDLen of [a-z2-7], all different, differ in every
// character position, and that no two share more than a 6-character
// prefix. Of 1000 random ids two share 6 characters with probability
// about 5e-4 (n^2/2 / 32^6); NUIDs share 12 or more, counters more still.
func checkRandomIDs(t *testing.T, ids []string) {
	t.Helper()
	for _, id := range ids {
		if len(id) != IDLen || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("random part %q; want %d of [a-z2-7]", id, IDLen)
		}
	}
	for i := range IDLen {
		if !slices.ContainsFunc(ids, func(id string) bool { return id[i] != ids[0][i] }) {
			t.Errorf("character %d is %q in all %d ids: not random", i, ids[0][i], len(ids))
		}
	}
	sorted := slices.Sorted(slices.Values(ids))
	longest := 0
	for i := 1; i < len(sorted); i++ {
		n := 0
		for n < IDLen && sorted[i][n] == sorted[i-1][n] {
			n++
		}
		if n == IDLen {
			t.Fatalf("id %q made twice", sorted[i])
		}
		longest = max(longest, n)
	}
	if longest > 6 {
		t.Errorf("two of %d ids share a %d-character prefix: sequential, not random", len(ids), longest)
	}
}

func BenchmarkNewID(b *testing.B) {
	for b.Loop() {
		_ = NewID()
	}
}
