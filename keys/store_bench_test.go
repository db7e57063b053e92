package keys_test

import (
	"context"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
)

// BenchmarkLookup is what authenticating a virtual key costs a gateway: a
// SHA-256 of the secret and a map read, among 1,000 keys.
func BenchmarkLookup(b *testing.B) {
	q := queuetest.Start(b, queue.Config{Memory: true})
	s, err := keys.Open(context.Background(), q.JS, discard())
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	var secret string
	for range 1000 {
		if secret, _, err = s.Generate(context.Background(), "", keys.Params{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, ok := s.Lookup(secret); !ok {
				b.Fatal("not found")
			}
		}
	})
}

// BenchmarkPropagation is the time from Generate on one store to Lookup
// finding the key on another (another gateway) on the same server.
func BenchmarkPropagation(b *testing.B) {
	q := queuetest.Start(b, queue.Config{Memory: true})
	ctx := context.Background()
	a, err := keys.Open(ctx, q.JS, discard())
	if err != nil {
		b.Fatal(err)
	}
	defer a.Close()
	nc := q.Connect(b)
	other, err := openOn(ctx, nc)
	if err != nil {
		b.Fatal(err)
	}
	defer other.Close()
	var total time.Duration
	for b.Loop() {
		secret, _, err := a.Generate(ctx, "", keys.Params{})
		if err != nil {
			b.Fatal(err)
		}
		start := time.Now()
		for {
			if _, ok := other.Lookup(secret); ok {
				break
			}
			if time.Since(start) > 5*time.Second {
				b.Fatal("not seen within 5s")
			}
			time.Sleep(50 * time.Microsecond)
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "us/seen-after-generate")
}
