package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/admission/multimodal"
	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/queue/jobstore"
	"github.com/laas-bridge/laas-bridge/schema"
	"github.com/laas-bridge/laas-bridge/worker"
	"github.com/laas-bridge/laas-bridge/worker/dlq"
)

// refusal is what a door answered a bad request with.
type refusal struct {
	Status      int
	Code, Param string
}

// badRequests are requests every door must refuse, each the same way. fits
// says whether the body fits a NATS message (1 MB): the NATS doors cannot
// carry a 4 MB image at all.
func badRequests() []struct {
	name, body string
	fits       bool
} {
	msg := func(content string) string {
		return `{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":` + content + `}]}`
	}
	image := func(url string) string { return `{"type":"image_url","image_url":{"url":"` + url + `"}}` }
	tiny := image("data:image/png;base64,iVBORw0KGgo=")
	big := image("data:image/png;base64," + base64.StdEncoding.EncodeToString(make([]byte, multimodal.MaxImageBytes+1)))
	return []struct {
		name, body string
		fits       bool
	}{
		{"bad model", `{"model":"nope","messages":[{"role":"user","content":"hi"}]}`, true},
		{"bad role", `{"model":"claude-3.5-sonnet","messages":[{"role":"wizard","content":"hi"}]}`, true},
		{"too many images", msg("[" + strings.Repeat(tiny+",", multimodal.MaxImagesPerMessage) + tiny + "]"), true},
		{"oversized image", msg("[" + big + "]"), false},
		{"preset override", `{"model":"claude-3.5-sonnet","preset_hash":"not-mine","messages":[{"role":"user","content":"hi"}]}`, true},
	}
}

// TestDoorsRefuseAlike: the same bad request gets the same refusal (status,
// code, param) at every door into the queue: HTTP chat completions, HTTP
// async jobs, a Batch API line (code: its error file has no status), the
// NATS micro endpoint, a direct producer's envelope (its failed result), and
// dlq replay. Every door calls the admission core; none keeps a copy of
// the checks, so none can drift.
func TestDoorsRefuseAlike(t *testing.T) {
	mock, in := serveWithMock(t, 0, "--nats-listen", "127.0.0.1:0")
	url, seed := servedNATS(t, in.logs.String())
	js := connectJS(t, url, seedOption(t, seed))
	nc := js.Conn()
	doors := []struct {
		name  string
		nats  bool // the request travels in one NATS message
		admit func(t *testing.T, i int, body string) refusal
	}{
		{"http chat", false, func(t *testing.T, _ int, body string) refusal {
			return httpRefusal(t, in.url+"/v1/chat/completions", body)
		}},
		{"http jobs", false, func(t *testing.T, _ int, body string) refusal { return httpRefusal(t, in.url+"/v1/queue/jobs", body) }},
		{"batch line", false, func(t *testing.T, _ int, body string) refusal { return batchRefusal(t, in, body) }},
		{"nats micro", true, func(t *testing.T, _ int, body string) refusal { return microRefusal(t, nc, body) }},
		{"direct producer", true, func(t *testing.T, i int, body string) refusal { return producerRefusal(t, js, i, body) }},
		{"dlq replay", false, func(t *testing.T, i int, body string) refusal { return replayRefusal(t, js, i, body) }},
	}
	for i, bad := range badRequests() {
		t.Run(bad.name, func(t *testing.T) {
			want := doors[0].admit(t, i, bad.body)
			if want.Status < 400 || want.Status >= 500 || want.Code == "" {
				t.Fatalf("HTTP answered %+v; want a 4xx with a code", want)
			}
			for _, d := range doors[1:] {
				if d.nats && !bad.fits {
					continue
				}
				got := d.admit(t, i, bad.body)
				if d.name == "batch line" {
					got.Status, got.Param = want.Status, want.Param // an error line carries the code only
				}
				if got != want {
					t.Errorf("%s refused with %+v; HTTP with %+v", d.name, got, want)
				}
			}
		})
	}
	if n := mock.Calls(); n != 0 {
		t.Errorf("LaaS was called %d times for requests every door refuses", n)
	}
}

// httpRefusal posts body and reads OpenAI's error body.
func httpRefusal(t *testing.T, url, body string) refusal {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return refusalOf(t, resp.StatusCode, data)
}

// refusalOf reads OpenAI's error body {"error": {...}}.
func refusalOf(t *testing.T, status int, data []byte) refusal {
	t.Helper()
	var e schema.ErrorBody
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatalf("%d %s: not an OpenAI error body: %v", status, data, err)
	}
	r := refusal{Status: status}
	if e.Error.Code != nil {
		r.Code = *e.Error.Code
	}
	if e.Error.Param != nil {
		r.Param = *e.Error.Param
	}
	return r
}

// microRefusal asks the NATS micro endpoint.
func microRefusal(t *testing.T, nc *nats.Conn, body string) refusal {
	t.Helper()
	m, err := nc.Request("laas.api.chat", []byte(body), 30*time.Second)
	if err != nil {
		t.Fatalf("NATS request: %v", err)
	}
	status, err := strconv.Atoi(m.Header.Get("Nats-Service-Error-Code"))
	if err != nil {
		t.Fatalf("NATS answer without an error code: %v %s", m.Header, m.Data)
	}
	return refusalOf(t, status, m.Data)
}

// producerRefusal publishes body as a direct producer's job and reads its
// result.
func producerRefusal(t *testing.T, js jetstream.JetStream, i int, body string) refusal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := fmt.Sprintf("door-producer-%d", i)
	env, _ := json.Marshal(map[string]any{"id": id, "job": true, "request": json.RawMessage(body)})
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "laas.requests.batch", Data: env, Header: nats.Header{"Nats-Msg-Id": []string{id}}}); err != nil {
		t.Fatal(err)
	}
	res := nextJobResult(t, ctx, js, schema.ResultsSubject(id))
	if res.Status != schema.JobFailed || res.Error == nil {
		t.Fatalf("job %s: %+v; want a failed result", id, res)
	}
	r := refusal{Status: res.StatusCode}
	if res.Error.Code != nil {
		r.Code = *res.Error.Code
	}
	if res.Error.Param != nil {
		r.Param = *res.Error.Param
	}
	return r
}

// nextJobResult reads the result on subject from LAAS_RESULTS.
func nextJobResult(t *testing.T, ctx context.Context, js jetstream.JetStream, subject string) schema.JobResult {
	t.Helper()
	cons, err := js.OrderedConsumer(ctx, schema.StreamResults, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		t.Fatal(err)
	}
	m, err := cons.Next(jetstream.FetchMaxWait(30 * time.Second))
	if err != nil {
		t.Fatalf("no result on %s: %v", subject, err)
	}
	var res schema.JobResult
	if err := json.Unmarshal(m.Data(), &res); err != nil {
		t.Fatal(err)
	}
	return res
}

// batchRefusal runs body as a batch's one line and reads its error line.
func batchRefusal(t *testing.T, in *instance, body string) refusal {
	t.Helper()
	c := client(in, "sk")
	line, _ := json.Marshal(map[string]any{"custom_id": "only", "method": "POST", "url": "/v1/chat/completions", "body": json.RawMessage(body)})
	b := uploadBatch(t, c, []string{string(line)}, nil)
	b = waitBatch(t, c, b.ID, time.Minute, "completed", "failed")
	lines := fileLines(t, c, b.ErrorFileID)
	if len(lines) != 1 || lines[0].Error == nil {
		t.Fatalf("batch %s (%s): error file %+v; want the line refused", b.ID, b.Status, lines)
	}
	return refusal{Code: lines[0].Error.Code}
}

// replayRefusal keeps body as a dead letter and replays it.
func replayRefusal(t *testing.T, js jetstream.JetStream, i int, body string) refusal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	log := slog.New(slog.DiscardHandler)
	dead, err := worker.NewDeadLetters(ctx, js, log)
	if err != nil {
		t.Fatal(err)
	}
	id := fmt.Sprintf("door-replay-%d", i)
	now := time.Now()
	if err := dead.DeadLetter(ctx, worker.DeadLetter{Envelope: schema.Envelope{ID: id, Model: "claude-3.5-sonnet", EnqueuedAt: now, Request: json.RawMessage(body)},
		Reason: schema.ErrorDetail{Message: "busy", Type: schema.TypeUpstream}, Status: 503, Attempts: 5, LastAttempt: now, FailedAt: now}); err != nil {
		t.Fatal(err)
	}
	catalog, err := schema.NewCatalog([]schema.Model{{Alias: "claude-3.5-sonnet", LaaSModel: "claude-3.5-sonnet", PresetHash: "h"}})
	if err != nil {
		t.Fatal(err)
	}
	core, err := admission.Open(ctx, admission.Config{}, js, catalog, log)
	if err != nil {
		t.Fatal(err)
	}
	store, err := dlq.Open(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	e, err := store.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	_, err = store.Replay(ctx, core, e, time.Minute)
	var se *schema.Error
	if !errors.As(err, &se) {
		t.Fatalf("replay of %s: %v; want a refusal", id, err)
	}
	if _, err := store.Get(ctx, id); err != nil {
		t.Errorf("the refused dead letter is gone: %v", err)
	}
	return refusal{Status: se.Status, Code: se.Code, Param: se.Param}
}

// TestProducerCannotChooseCoreFields: a direct producer's envelope that
// names what only the admission core sets (request_ref: another request's
// stored body; idempotency_key: a raw key in the answers bucket;
// Laas-Reply-To: a gateway's waiting caller) gets a failed result that says
// so, and LaaS is never called for it; a plain job beside them is answered.
func TestProducerCannotChooseCoreFields(t *testing.T) {
	mock, in := serveWithMock(t, 0, "--nats-listen", "127.0.0.1:0")
	url, seed := servedNATS(t, in.logs.String())
	js := connectJS(t, url, seedOption(t, seed))
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	request := json.RawMessage(`{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"hi"}]}`)
	for _, tc := range []struct {
		name, id, param string
		env             map[string]any
		header          nats.Header
	}{
		{"request_ref", "forge-ref", "request_ref", map[string]any{"request_ref": "someone-else"}, nil},
		{"idempotency_key", "forge-key", "idempotency_key", map[string]any{"idempotency_key": "caller.0123"}, nil},
		{"owner", "forge-owner", "owner", map[string]any{"owner": keys.Hash("sk-someone")}, nil},
		{"not_before", "forge-slot", "not_before", map[string]any{"not_before": time.Now().Add(time.Hour)}, nil},
		{"reply subject", "forge-reply", "", nil, nats.Header{schema.HeaderReplyTo: []string{"laas.reply.gw1.victim"}}},
		{"plain job", "plain", "", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			env := map[string]any{"id": tc.id, "job": true, "request": request}
			for k, v := range tc.env {
				env[k] = v
			}
			data, _ := json.Marshal(env)
			msg := &nats.Msg{Subject: "laas.requests.batch", Data: data, Header: nats.Header{"Nats-Msg-Id": []string{tc.id}}}
			for k, v := range tc.header {
				msg.Header[k] = v
			}
			if _, err := js.PublishMsg(ctx, msg); err != nil {
				t.Fatal(err)
			}
			res := nextJobResult(t, ctx, js, schema.ResultsSubject(tc.id))
			if tc.id == "plain" {
				if res.Status != schema.JobSucceeded {
					t.Fatalf("the plain job: %+v", res)
				}
				return
			}
			if res.Status != schema.JobFailed || res.StatusCode != http.StatusBadRequest || res.Error == nil ||
				*res.Error.Code != schema.CodeInvalidValue || !strings.Contains(res.Error.Message, "set by the bridge, not by a producer") {
				t.Fatalf("result %+v (error %+v); want a 400 that says the bridge sets it", res, res.Error)
			}
			if got := ""; res.Error.Param != nil {
				if got = *res.Error.Param; got != tc.param {
					t.Errorf("param %q, want %q", got, tc.param)
				}
			} else if tc.param != "" {
				t.Errorf("param null, want %q", tc.param)
			}
		})
	}
	t.Run("jobstore.Submit", func(t *testing.T) {
		// Go producers' helper: the job is recorded queued at once, then
		// admitted through the door like any producer's, and answered.
		store, err := jobstore.Open(ctx, js)
		if err != nil {
			t.Fatal(err)
		}
		st, known, err := store.Submit(ctx, &schema.Envelope{ID: "submitted", Model: "claude-3.5-sonnet", EnqueuedAt: time.Now(), Request: request})
		if err != nil || known || st.Status != schema.JobQueued {
			t.Fatalf("Submit = %+v, known %v, %v; want a queued job", st, known, err)
		}
		if res := nextJobResult(t, ctx, js, schema.ResultsSubject("submitted")); res.Status != schema.JobSucceeded {
			t.Fatalf("the submitted job: %+v", res)
		}
	})
	t.Run("forged resubmission of a finished job", func(t *testing.T) {
		// Refused, and dropped: the finished job's result stays as it was.
		data, _ := json.Marshal(map[string]any{"id": "plain", "job": true, "request": request, "request_ref": "someone-else"})
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "laas.requests.batch", Data: data}); err != nil {
			t.Fatal(err)
		}
		cons, err := js.Consumer(ctx, schema.StreamRequests, schema.ConsumerAdmission)
		if err != nil {
			t.Fatal(err)
		}
		for start := time.Now(); ; time.Sleep(20 * time.Millisecond) {
			info, err := cons.Info(ctx)
			if err == nil && info.NumPending == 0 && info.NumAckPending == 0 {
				break
			}
			if time.Since(start) > 30*time.Second {
				t.Fatalf("the admission door did not take the resubmission within 30s: %+v, %v", info, err)
			}
		}
		if res := nextJobResult(t, ctx, js, schema.ResultsSubject("plain")); res.Status != schema.JobSucceeded {
			t.Errorf("the finished job's result after a forged resubmission: %+v", res)
		}
		kv, err := js.KeyValue(ctx, schema.BucketJobs)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, "plain")
		var st schema.JobState
		if err != nil || json.Unmarshal(e.Value(), &st) != nil || st.Status != schema.JobSucceeded {
			t.Errorf("the finished job's state after a forged resubmission: %+v, %v; want succeeded", st, err)
		}
	})
	t.Run("deadline passed", func(t *testing.T) {
		// A refusal, answered once: not handed back as if the queue were down.
		data, _ := json.Marshal(map[string]any{"id": "late", "job": true, "request": request, "deadline": time.Now().Add(-time.Minute)})
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "laas.requests.batch", Data: data}); err != nil {
			t.Fatal(err)
		}
		res := nextJobResult(t, ctx, js, schema.ResultsSubject("late"))
		if res.Status != schema.JobFailed || res.StatusCode != http.StatusGatewayTimeout || res.Error == nil || *res.Error.Code != schema.CodeDeadlineExceeded {
			t.Fatalf("result %+v; want 504 deadline_exceeded", res)
		}
	})
	if n := mock.Calls(); n != 2 {
		t.Errorf("LaaS called %d times; want 2, for the plain job and the submitted one only", n)
	}
}
