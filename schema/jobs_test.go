package schema_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

func TestJobNames(t *testing.T) {
	// Producers in other languages use these names: changing one breaks them.
	for _, tc := range []struct{ name, got, want string }{
		{"results stream", schema.StreamResults, "LAAS_RESULTS"},
		{"results subject", schema.SubjectResults, "laas.results"},
		{"jobs bucket", schema.BucketJobs, "LAAS_JOBS"},
		{"where producers publish jobs", schema.SubjectSubmit, "laas.requests.batch"},
		{"default results subject", schema.ResultsSubject("j1"), "laas.results.j1"},
		{"cancelled code", schema.CodeJobCancelled, "job_cancelled"},
	} {
		if tc.got != tc.want {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
}

func TestValidResultsSubject(t *testing.T) {
	for _, tc := range []struct {
		subject, id string
		want        bool
	}{
		{"laas.results.j1", "j1", true},
		{"laas.results.myapp.j1", "j1", true},
		{"laas.results.a.b.c.d.e.f.g.h.j1", "j1", true},
		{"laas.results.a.b.c.d.e.f.g.h.i.j1", "j1", false}, // 9 tokens before the id
		{"laas.results.myapp.j2", "j1", false},             // another job's subject
		{"laas.results.j1.myapp", "j1", false},
		{"laas.results.*.j1", "j1", false},
		{"laas.results.>", "j1", false},
		{"laas.results..j1", "j1", false},
		{"laas.results.", "", false},
		{"laas.results", "j1", false},
		{"laas.requests.interactive.j1", "j1", false},
		{"laas.reply.gw.j1", "j1", false},
		{"$JS.API.STREAM.DELETE.LAAS_REQUESTS", "LAAS_REQUESTS", false},
		{"laas.results.my app.j1", "j1", false},
		{"laas.results." + strings.Repeat("x", 65) + ".j1", "j1", false},
		{"laas.results.j.1", "j.1", false}, // not a plain id
	} {
		if got := schema.ValidResultsSubject(tc.subject, tc.id); got != tc.want {
			t.Errorf("ValidResultsSubject(%q, %q) = %v, want %v", tc.subject, tc.id, got, tc.want)
		}
	}
}

func TestJobStatusFinal(t *testing.T) {
	for s, want := range map[schema.JobStatus]bool{schema.JobQueued: false, schema.JobRunning: false,
		schema.JobSucceeded: true, schema.JobFailed: true, schema.JobCancelled: true, "": false} {
		if s.Final() != want {
			t.Errorf("%q.Final() = %v", s, !want)
		}
	}
}

func TestJobResultOf(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("KST", 9*3600))
	cc := &schema.ChatCompletion{ID: "chatcmpl-j1", Object: "chat.completion"}
	ok := schema.JobResultOf(schema.Reply{ID: "j1", Status: 200, Completion: cc, Attempts: 2, QueueMs: 5, UpstreamMs: 7}, "m", at)
	if ok.Status != schema.JobSucceeded || ok.StatusCode != 200 || ok.Completion != cc || ok.Attempts != 2 || ok.QueueMs != 5 ||
		ok.UpstreamMs != 7 || ok.Model != "m" || !ok.FinishedAt.Equal(at) || ok.FinishedAt.Location() != time.UTC || ok.Err() != nil {
		t.Errorf("success = %+v", ok)
	}
	failed := schema.JobResultOf(schema.ErrorReply("j1", &schema.Error{Status: 429, Type: schema.TypeRateLimit, Code: schema.CodeRateLimitExceeded, Message: "slow down", RetryAfter: 3}), "m", at)
	if failed.Status != schema.JobFailed || failed.StatusCode != 429 || failed.RetryAfter != 3 {
		t.Errorf("failure = %+v", failed)
	}
	if e := failed.Err(); e == nil || e.Status != 429 || e.Code != schema.CodeRateLimitExceeded || e.Message != "slow down" || e.RetryAfter != 3 {
		t.Errorf("failure Err() = %+v", e)
	}
	cancelled := schema.JobResultOf(schema.ErrorReply("j1", schema.JobCancelledError()), "m", at)
	if cancelled.Status != schema.JobCancelled || cancelled.StatusCode != schema.StatusJobCancelled || *cancelled.Error.Code != schema.CodeJobCancelled {
		t.Errorf("cancelled = %+v", cancelled)
	}
	got, _ := json.Marshal(cancelled)
	want := `{"id":"j1","status":"cancelled","model":"m","status_code":499,"error":{"message":"The job was cancelled before it finished.",` +
		`"type":"invalid_request_error","param":null,"code":"job_cancelled"},"attempts":0,"queue_ms":0,"upstream_ms":0,"finished_at":"2026-01-01T18:04:05Z"}`
	if string(got) != want {
		t.Errorf("cancelled result JSON\n got %s\nwant %s", got, want)
	}
}

func TestEnvelopeResultsTo(t *testing.T) {
	e := schema.Envelope{ID: "j1", Job: true}
	if e.ResultsTo() != "laas.results.j1" {
		t.Errorf("default = %q", e.ResultsTo())
	}
	e.ResultsSubject = "laas.results.app.j1"
	if e.ResultsTo() != "laas.results.app.j1" {
		t.Errorf("given = %q", e.ResultsTo())
	}
	b, _ := json.Marshal(e)
	if !strings.Contains(string(b), `"job":true,"results_subject":"laas.results.app.j1"`) {
		t.Errorf("envelope JSON %s", b)
	}
}
