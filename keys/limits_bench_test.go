package keys

import (
	"strconv"
	"testing"
	"time"
)

// BenchmarkLimitsAdmitSettle is what a key with limits costs a request:
// Admit at the gateway and Settle at the worker, each a read and a
// compare-and-set of the key's state on an embedded NATS server. A key
// without limits costs neither.
func BenchmarkLimitsAdmitSettle(b *testing.B) {
	now := time.Now()
	l := limitsOn(b, 1, &now)[0]
	k := &Key{Token: Hash("bench"), RPMLimit: ptr[int64](1 << 40), MaxParallelRequests: ptr[int64](1 << 20), MaxBudget: ptr(1e12), CreatedAt: now}
	ctx := b.Context()
	b.ResetTimer()
	for i := range b.N {
		id := "r" + strconv.Itoa(i)
		if _, err := l.Admit(ctx, k, id, now.Add(time.Minute), false); err != nil {
			b.Fatal(err)
		}
		if err := l.Settle(ctx, k.Token, k, id, Spent{Called: true, InputTokens: 10, OutputTokens: 10, Cost: 1}); err != nil {
			b.Fatal(err)
		}
	}
}
