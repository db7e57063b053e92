package laas

import (
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

const benchChat = `{"model":"m","messages":[{"role":"system","content":"You are terse."},` +
	`{"role":"user","content":"Say hello to the benchmark."}],"temperature":0.2,"params":{"name":"Kim","n":3}}`

// BenchmarkToLaaS translates a decoded chat request into the LaaS call.
func BenchmarkToLaaS(b *testing.B) {
	req, err := schema.DecodeChatRequest([]byte(benchChat))
	if err != nil {
		b.Fatal(err)
	}
	m := schema.Model{Alias: "m", LaaSModel: "claude-4-sonnet", PresetHash: "p1", ServiceType: "ANTHROPIC"}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ToLaaS(req, m); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkFromLaaS translates LaaS's answer into an OpenAI completion.
func BenchmarkFromLaaS(b *testing.B) {
	resp := &schema.LaaSResponse{ID: "up", Object: "chat.completion", Created: 1_700_000_000_000, Choices: []schema.LaaSChoice{{}}}
	resp.Choices[0].Message.Content = schema.Content{Text: "Hello, benchmark! 안녕하세요."}
	now := time.Now()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := FromLaaS(resp, "chatcmpl-x", "m", now); err != nil {
			b.Fatal(err)
		}
	}
}
