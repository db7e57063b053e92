package schema_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// benchBody is a typical small chat request, as the gateway receives it.
const benchBody = `{"model":"claude-3.5-sonnet","messages":[{"role":"system","content":"You are terse."},` +
	`{"role":"user","content":"Say hello to the benchmark."}],"temperature":0.2,"params":{"name":"Kim"}}`

func benchEnvelope() schema.Envelope {
	now := time.Now()
	return schema.Envelope{ID: "6PXZLhJcWoEL0NIJgnvdst", Model: "claude-3.5-sonnet", EnqueuedAt: now, Deadline: now.Add(10 * time.Minute), Request: json.RawMessage(benchBody)}
}

func benchReply() schema.Reply {
	fp := "fp"
	return schema.Reply{ID: "6PXZLhJcWoEL0NIJgnvdst", Status: 200, Attempts: 1, QueueMs: 1, UpstreamMs: 2, Completion: &schema.ChatCompletion{
		ID: "chatcmpl-6PXZLhJcWoEL0NIJgnvdst", Object: "chat.completion", Created: 1_700_000_000, Model: "claude-3.5-sonnet", SystemFingerprint: &fp,
		Choices: []schema.Choice{{Message: schema.AssistantMessage{Role: "assistant", Content: "Hello, benchmark! 안녕하세요."}, FinishReason: "stop"}},
		Usage:   &schema.Usage{PromptTokens: 20, CompletionTokens: 8, TotalTokens: 28},
	}}
}

// BenchmarkEnvelopeEncode is the gateway wrapping a request for the queue.
func BenchmarkEnvelopeEncode(b *testing.B) {
	env := benchEnvelope()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(env); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkEnvelopeDecode is a worker reading a job.
func BenchmarkEnvelopeDecode(b *testing.B) {
	data, _ := json.Marshal(benchEnvelope())
	b.ReportAllocs()
	for b.Loop() {
		var env schema.Envelope
		if err := json.Unmarshal(data, &env); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeChatRequest runs once in the gateway and once in the worker.
func BenchmarkDecodeChatRequest(b *testing.B) {
	body := []byte(benchBody)
	b.ReportAllocs()
	for b.Loop() {
		req, err := schema.DecodeChatRequest(body)
		if err != nil {
			b.Fatal(err)
		}
		if err := req.Validate(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReplyEncode is a worker publishing an answer.
func BenchmarkReplyEncode(b *testing.B) {
	rep := benchReply()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(&rep); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReplyDecode decodes a whole reply, completion included (what the
// gateway does for a streaming caller).
func BenchmarkReplyDecode(b *testing.B) {
	rep := benchReply()
	data, _ := json.Marshal(&rep)
	b.ReportAllocs()
	for b.Loop() {
		var r schema.Reply
		if err := json.Unmarshal(data, &r); err != nil {
			b.Fatal(err)
		}
	}
}
