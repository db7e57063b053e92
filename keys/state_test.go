package keys

import (
	"math/rand/v2"
	"testing"
)

// Slots taken with firstSlot, now or ahead, in any order of arrival, never
// put more than rpm calls in any spanSecs seconds: so no 60 s window,
// wherever it starts within a second, holds more than rpm calls.
func TestSlotsNeverOverfillASpan(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, rpm := range []int64{1, 3, 60, 100} {
		var st state
		now := int64(1_000_000)
		for range 3000 {
			now += int64(r.IntN(3))
			until := now
			if r.IntN(2) == 0 {
				until = now + int64(r.IntN(300))
			}
			at, ok := st.firstSlot(now, until, rpm)
			if !ok {
				continue
			}
			if at < now || at > until {
				t.Fatalf("rpm %d: slot %d outside %d..%d", rpm, at, now, until)
			}
			if st.Slots == nil {
				st.Slots = map[int64]int64{}
			}
			st.Slots[at]++
		}
		lo, hi := int64(1_000_000), now+300
		for end := lo; end <= hi; end++ {
			var n int64
			for at := end - spanSecs + 1; at <= end; at++ {
				n += st.Slots[at]
			}
			if n > rpm {
				t.Fatalf("rpm %d: %d calls in the %d seconds ending %d", rpm, n, spanSecs, end)
			}
		}
	}
}

// A full schedule's Retry-After is when the first slot frees.
func TestNextFree(t *testing.T) {
	st := state{Slots: map[int64]int64{100: 2, 130: 1}}
	if got := st.nextFree(130, 3); got != 161 {
		t.Errorf("nextFree = %d, want 161: second 100 leaves the span ending 160", got)
	}
	if got := st.nextFree(130, 4); got != 131 {
		t.Errorf("nextFree with room = %d, want the next second, 131", got)
	}
}
