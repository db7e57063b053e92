package worker

import (
	"log/slog"
	"strconv"
	"sync"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// BenchmarkSendReply is one reply handed to a gateway, on an embedded
// server with file storage: "direct" to a gateway that answers on the
// direct subject (the fast path), "stream" with none listening there, so
// the reply is stored in StreamReplies (what every reply did before).
// cpu-ns/op is the process's CPU time per reply, the server's included.
func BenchmarkSendReply(b *testing.B) {
	for _, direct := range []bool{true, false} {
		name := "stream"
		if direct {
			name = "direct"
		}
		b.Run(name, func(b *testing.B) {
			q := queuetest.Start(b, queue.Config{})
			p, err := NewPool(Config{}, q.JS, q.Consumer, &recorder{}, catalog(b), slog.New(slog.DiscardHandler))
			if err != nil {
				b.Fatal(err)
			}
			defer p.cancels.close()
			gw := q.Connect(b)
			sub, err := gw.Subscribe(schema.SubjectReplies+".bench.*", func(*nats.Msg) {})
			if err != nil {
				b.Fatal(err)
			}
			defer sub.Unsubscribe()
			if direct {
				sub, err := gw.Subscribe(schema.SubjectDirectReplies+".bench.*", func(m *nats.Msg) { _ = m.Respond(nil) })
				if err != nil {
					b.Fatal(err)
				}
				defer sub.Unsubscribe()
			}
			_ = gw.Flush()
			data := []byte(`{"id":"r","status":200,"completion":{"id":"chatcmpl-r","object":"chat.completion","created":1700000000,` +
				`"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"Hello, benchmark!"},"finish_reason":"stop"}]},"attempts":1}`)
			b.ReportAllocs()
			cpu := processCPU(b)
			i := 0
			for b.Loop() {
				i++
				if err := p.sendReply(schema.SubjectReplies+".bench.r"+strconv.Itoa(i), data); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(processCPU(b)-cpu)/float64(i), "cpu-ns/op")
		})
	}
}

// processCPU is the CPU time this process (the embedded NATS server
// included) has used, in nanoseconds.
func processCPU(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// benchChat is a small chat request, as laas's translation benchmarks use.
const benchChat = `{"model":"m","messages":[{"role":"system","content":"You are terse."},` +
	`{"role":"user","content":"Say hello to the benchmark."}],"temperature":0.2,"params":{"name":"Kim","n":3}}`

// BenchmarkJobGoroutine is a job's request decoding and translation run
// in a fresh goroutine per job (what the pool did) or handed to a goroutine
// that ran the previous job (what it does: runnerIdle). cpu-ns/op is the
// process's CPU time per job.
func BenchmarkJobGoroutine(b *testing.B) {
	m := schema.Model{Alias: "m", LaaSModel: "claude-4-sonnet", PresetHash: "p1", ServiceType: "ANTHROPIC"}
	job := func() {
		req, err := schema.DecodeChatRequest([]byte(benchChat))
		if err != nil {
			panic(err)
		}
		if _, err := laas.ToLaaS(req, m); err != nil {
			panic(err)
		}
	}
	b.Run("fresh", func(b *testing.B) {
		b.ReportAllocs()
		var wg sync.WaitGroup
		cpu := processCPU(b)
		for b.Loop() {
			wg.Go(job)
			wg.Wait()
		}
		b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
	})
	b.Run("reused", func(b *testing.B) {
		b.ReportAllocs()
		jobs, done := make(chan struct{}), make(chan struct{})
		go func() {
			for range jobs {
				job()
				done <- struct{}{}
			}
		}()
		defer close(jobs)
		cpu := processCPU(b)
		for b.Loop() {
			jobs <- struct{}{}
			<-done
		}
		b.ReportMetric(float64(processCPU(b)-cpu)/float64(b.N), "cpu-ns/op")
	})
}
