package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/responses"
)

// responsesConfig is a config.yaml with the demo model and "slow", whose
// rpm of 1 holds every call after its first back for a minute: a
// response to it stays unfinished long enough to be cancelled.
const responsesConfig = `model_list:
  - model_name: claude-3.5-sonnet
    litellm_params:
      model: laas/claude-3.5-sonnet
  - model_name: slow
    litellm_params:
      model: laas/claude-3.5-sonnet
      rpm: 1
`

func writeResponsesConfig(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(responsesConfig), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// untilFinal polls response id with the SDK until it has ended.
func untilFinal(t *testing.T, c *openai.Client, id string) *responses.Response {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r, err := c.Responses.Get(t.Context(), id, responses.ResponseGetParams{})
		if err != nil {
			t.Fatalf("GET %s: %v", id, err)
		}
		switch r.Status {
		case responses.ResponseStatusQueued, responses.ResponseStatusInProgress:
		default:
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("response %s still %s after 60 s", id, r.Status)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// responsesSuite makes the official openai-go client's Responses calls
// against c, whose LaaS answers "mock[preset]: <last user text>":
// create, stream, previous_response_id, background (polled, then streamed
// again from a sequence number), delete.
func responsesSuite(t *testing.T, c *openai.Client, preset string) {
	ctx := t.Context()
	answer := func(text string) string { return "mock[" + preset + "]: " + text }
	var first *responses.Response
	t.Run("create", func(t *testing.T) {
		r, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "claude-3.5-sonnet",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("hello there")}, Instructions: openai.String("be brief")})
		if err != nil {
			t.Fatal(err)
		}
		if r.OutputText() != answer("hello there") || r.Status != responses.ResponseStatusCompleted || !strings.HasPrefix(r.ID, "resp_") ||
			r.Usage.InputTokens != mockWords("be brief", "hello there") || r.ServiceTier != responses.ResponseServiceTierDefault {
			t.Errorf("response %s: %q, status %s, usage %+v, tier %s", r.ID, r.OutputText(), r.Status, r.Usage, r.ServiceTier)
		}
		first = r
	})
	t.Run("previous_response_id", func(t *testing.T) {
		if first == nil {
			t.Fatal("create failed: no response to continue or delete")
		}
		r, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "claude-3.5-sonnet", PreviousResponseID: openai.String(first.ID),
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("and again")}})
		if err != nil {
			t.Fatal(err)
		}
		// The earlier turn's input and answer went before it; its
		// instructions did not.
		if want := mockWords("hello there", answer("hello there"), "and again"); r.OutputText() != answer("and again") || r.Usage.InputTokens != want {
			t.Errorf("continued: %q with %d input tokens, want %q with %d", r.OutputText(), r.Usage.InputTokens, answer("and again"), want)
		}
	})
	t.Run("stream", func(t *testing.T) {
		const text = "안녕하세요, 스트림으로 답해 주세요"
		s := c.Responses.NewStreaming(ctx, responses.ResponseNewParams{Model: "claude-3.5-sonnet",
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String(text)}})
		var types []string
		var deltas strings.Builder
		var done responses.Response
		for s.Next() {
			ev := s.Current()
			types = append(types, ev.Type)
			switch ev.Type {
			case "response.output_text.delta":
				deltas.WriteString(ev.AsResponseOutputTextDelta().Delta)
			case "response.completed":
				done = ev.AsResponseCompleted().Response
			}
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if len(types) < 6 || types[0] != "response.created" || types[len(types)-1] != "response.completed" ||
			deltas.String() != answer(text) || done.OutputText() != answer(text) {
			t.Errorf("events %q, deltas %q, completed %q", types, deltas.String(), done.OutputText())
		}
	})
	t.Run("background", func(t *testing.T) {
		r, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "claude-3.5-sonnet", Background: openai.Bool(true),
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("in the background")}})
		if err != nil {
			t.Fatal(err)
		}
		if r.Status != responses.ResponseStatusQueued || !r.Background {
			t.Errorf("created %s, background %v; want queued", r.Status, r.Background)
		}
		done := untilFinal(t, c, r.ID)
		if done.Status != responses.ResponseStatusCompleted || done.OutputText() != answer("in the background") {
			t.Fatalf("polled: %s %q", done.Status, done.OutputText())
		}
		// Streamed again after event 2: the rest, from 3 on.
		s := c.Responses.GetStreaming(ctx, r.ID, responses.ResponseGetParams{StartingAfter: openai.Int(2)})
		var seqs []int64
		var last string
		for s.Next() {
			seqs = append(seqs, s.Current().SequenceNumber)
			last = s.Current().Type
		}
		if err := s.Err(); err != nil {
			t.Fatal(err)
		}
		if len(seqs) < 5 || seqs[0] != 3 || last != "response.completed" {
			t.Errorf("resumed stream: sequence numbers %v, last %s", seqs, last)
		}
	})
	t.Run("flex", func(t *testing.T) {
		r, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "claude-3.5-sonnet", ServiceTier: responses.ResponseNewParamsServiceTierFlex,
			Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("no hurry")}})
		if err != nil || r.ServiceTier != responses.ResponseServiceTierFlex || r.OutputText() != answer("no hurry") {
			t.Errorf("response: %v, tier %q, %q", err, r.ServiceTier, r.OutputText())
		}
		cc, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "claude-3.5-sonnet", ServiceTier: openai.ChatCompletionNewParamsServiceTierFlex,
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("no hurry")}})
		if err != nil || cc.ServiceTier != openai.ChatCompletionServiceTierFlex || cc.Choices[0].Message.Content != answer("no hurry") {
			t.Errorf("chat completion: %v, tier %q", err, cc.ServiceTier)
		}
		plain, err := c.Chat.Completions.New(ctx, openai.ChatCompletionNewParams{Model: "claude-3.5-sonnet",
			Messages: []openai.ChatCompletionMessageParamUnion{openai.UserMessage("now")}})
		if err != nil || plain.ServiceTier != openai.ChatCompletionServiceTierDefault {
			t.Errorf("chat completion without a tier: %v, tier %q", err, plain.ServiceTier)
		}
	})
	t.Run("delete", func(t *testing.T) {
		if first == nil {
			t.Fatal("create failed: no response to continue or delete")
		}
		if err := c.Responses.Delete(ctx, first.ID); err != nil {
			t.Fatal(err)
		}
		_, err := c.Responses.Get(ctx, first.ID, responses.ResponseGetParams{})
		if apiErr, ok := errors.AsType[*openai.Error](err); !ok || apiErr.StatusCode != 404 || apiErr.Code != "response_not_found" {
			t.Errorf("GET after DELETE: %v", err)
		}
	})
}

// cancelSlow cancels a background response to "slow" made while another
// call to it holds its one call a minute: it is queued or waiting for its
// slot, and ends cancelled.
func cancelSlow(t *testing.T, c *openai.Client) {
	t.Helper()
	ctx := t.Context()
	if _, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "slow", Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("first")}}); err != nil {
		t.Fatal(err)
	}
	r, err := c.Responses.New(ctx, responses.ResponseNewParams{Model: "slow", Background: openai.Bool(true),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("never")}})
	if err != nil {
		t.Fatal(err)
	}
	cancelled, err := c.Responses.Cancel(ctx, r.ID)
	if err != nil || cancelled.Status != responses.ResponseStatusCancelled {
		t.Fatalf("cancel: %v %+v", err, cancelled)
	}
	if r := untilFinal(t, c, r.ID); r.Status != responses.ResponseStatusCancelled || len(r.Output) != 0 {
		t.Errorf("after cancel: %s with %d outputs", r.Status, len(r.Output))
	}
}

// TestResponsesDemo: the openai-go Responses calls against serve --demo.
func TestResponsesDemo(t *testing.T) {
	clearEnv(t)
	in := startDemo(t, "--config", writeResponsesConfig(t))
	c := client(in, "sk-any")
	responsesSuite(t, c, "demo-preset")
	t.Run("cancel", func(t *testing.T) { cancelSlow(t, c) })
}

// TestResponsesGatewayKilled: against a gateway and a worker on a NATS
// server, the same calls; and a background response queued on a gateway
// that is then SIGKILLed (before any worker runs) completes, and is
// fetched from another gateway.
func TestResponsesGatewayKilled(t *testing.T) {
	const project, apiKey = "proj-R", "key-R"
	srv := listeningNATS(t)
	cfg := writeResponsesConfig(t)
	_, mockURL := startProc(t, "mock-laas", t.TempDir(), baseEnv(), mockReady,
		"mock-laas", "--listen", "127.0.0.1:0", "--project", project, "--api-key", apiKey)
	gwEnv := baseEnv("NATS_URL="+srv.ClientURL(), "BRIDGE_CONFIG="+cfg)
	gwA, addrA := startProc(t, "gateway-a", t.TempDir(), gwEnv, gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	a := client(&instance{url: "http://" + addrA}, "sk-any")
	queued, err := a.Responses.New(t.Context(), responses.ResponseNewParams{Model: "claude-3.5-sonnet", Background: openai.Bool(true),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("outlive the gateway")}})
	if err != nil || queued.Status != responses.ResponseStatusQueued {
		t.Fatalf("background response: %v %+v", err, queued)
	}
	// Cancelled while no worker runs: it never reaches LaaS.
	never, err := a.Responses.New(t.Context(), responses.ResponseNewParams{Model: "claude-3.5-sonnet", Background: openai.Bool(true),
		Input: responses.ResponseNewParamsInputUnion{OfString: openai.String("cancelled before a worker")}})
	if err != nil {
		t.Fatal(err)
	}
	if r, err := a.Responses.Cancel(t.Context(), never.ID); err != nil || r.Status != responses.ResponseStatusCancelled {
		t.Fatalf("cancel: %v %+v", err, r)
	}
	_ = gwA.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-gwA.done:
	case <-time.After(10 * time.Second):
		t.Fatal("gateway A did not die within 10 s of SIGKILL")
	}

	startProc(t, "worker", t.TempDir(), baseEnv("NATS_URL="+srv.ClientURL(), "BRIDGE_CONFIG="+cfg, "LAAS_PROJECT_CODE="+project,
		"LAAS_API_KEY="+apiKey, "LAAS_PRESET_HASH=default-hash", "LAAS_BASE_URL="+mockURL), workerReady, "worker")
	_, addrB := startProc(t, "gateway-b", t.TempDir(), gwEnv, gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	b := client(&instance{url: "http://" + addrB}, "sk-any")
	done := untilFinal(t, b, queued.ID)
	if done.Status != responses.ResponseStatusCompleted || done.OutputText() != "mock[default-hash]: outlive the gateway" {
		t.Errorf("from gateway B: %s %q", done.Status, done.OutputText())
	}
	if r := untilFinal(t, b, never.ID); r.Status != responses.ResponseStatusCancelled {
		t.Errorf("the cancelled one from gateway B: %s", r.Status)
	}
	responsesSuite(t, b, "default-hash")
	t.Run("cancel", func(t *testing.T) { cancelSlow(t, b) })
}
