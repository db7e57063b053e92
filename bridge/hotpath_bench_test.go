package bridge

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/labstack/echo/v4"

	"github.com/laas-bridge/laas-bridge/schema"
)

// BenchmarkCorrelator is one caller's round through the correlator:
// register, the reply arrives, the caller takes it and forgets its id, with
// 1,000 other callers waiting.
func BenchmarkCorrelator(b *testing.B) {
	c := &correlator{prefix: "laas.reply.gw.", waiting: make(map[string]chan []byte)}
	for i := range 1000 {
		c.expect("other" + strconv.Itoa(i))
	}
	ids := make([]string, 1024)
	for i := range ids {
		ids[i] = "req" + strconv.Itoa(i)
	}
	data := []byte("reply")
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id := ids[i&1023]
		i++
		ch := c.expect(id)
		c.deliverID(id, data)
		<-ch
		c.forget(id)
	}
}

// BenchmarkCorrelatorParallel is BenchmarkCorrelator from many goroutines.
func BenchmarkCorrelatorParallel(b *testing.B) {
	c := &correlator{prefix: "laas.reply.gw.", waiting: make(map[string]chan []byte)}
	data := []byte("reply")
	var next atomic.Int64
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		id := "req" + strconv.FormatInt(next.Add(1), 10)
		for pb.Next() {
			ch := c.expect(id)
			c.deliverID(id, data)
			<-ch
			c.forget(id)
		}
	})
}

// BenchmarkAnswerCaller is the gateway turning a worker's reply into the
// caller's answer: "raw" passes the completion through as encoded (what
// the gateway does), "decoded" decodes and re-encodes it (what it did).
func BenchmarkAnswerCaller(b *testing.B) {
	fp := "fp"
	rep := schema.Reply{ID: "6PXZLhJcWoEL0NIJgnvdst", Status: 200, Attempts: 1, QueueMs: 1, UpstreamMs: 2, Completion: &schema.ChatCompletion{
		ID: "chatcmpl-6PXZLhJcWoEL0NIJgnvdst", Object: "chat.completion", Created: 1_700_000_000, Model: "claude-3.5-sonnet", SystemFingerprint: &fp,
		Choices: []schema.Choice{{Message: schema.AssistantMessage{Role: "assistant", Content: "Hello, benchmark! 안녕하세요."}, FinishReason: "stop"}},
		Usage:   &schema.Usage{PromptTokens: 20, CompletionTokens: 8, TotalTokens: 28},
	}}
	raw, _ := json.Marshal(&rep)
	g := &Gateway{}
	e := echo.New()
	req := httptest.NewRequest(http.MethodPost, "/v1/chat/completions", nil)
	b.Run("raw", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c := e.NewContext(req, &discardWriter{h: http.Header{}})
			r, err := g.decodeRawReply(c, raw)
			if err != nil {
				b.Fatal(err)
			}
			if err := c.JSONBlob(http.StatusOK, r.Completion); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("decoded", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			c := e.NewContext(req, &discardWriter{h: http.Header{}})
			r, err := g.decodeReply(c, raw)
			if err != nil {
				b.Fatal(err)
			}
			if err := c.JSON(http.StatusOK, r.Completion); err != nil {
				b.Fatal(err)
			}
		}
	})
}
