package soak

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// fakeGateway answers chat completions (streamed or not) and the jobs API
// as the bridge does over the mock, echoing each request's text, except
// where its fault says otherwise.
type fakeGateway struct {
	fault string // "", "swap": a chat answer holds the previous chat's text; "fail-jobs": jobs end failed; "overloaded": 503 server_overloaded

	mu       sync.Mutex
	lastText string
	jobs     map[string]string // id -> text
}

func (f *fakeGateway) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/chat/completions", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Stream   bool `json:"stream"`
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		if f.fault == "overloaded" {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `{"error":{"message":"busy","type":"server_error","code":"server_overloaded"}}`)
			return
		}
		text := req.Messages[0].Content
		f.mu.Lock()
		if f.fault == "swap" && f.lastText != "" {
			text, f.lastText = f.lastText, text
		} else {
			f.lastText = text
		}
		f.mu.Unlock()
		content := "mock[ab]: " + text
		if req.Stream {
			fmt.Fprintf(w, "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":%q}}]}\n\ndata: [DONE]\n\n", content)
			return
		}
		_ = json.NewEncoder(w).Encode(completion(content))
	})
	mux.HandleFunc("POST /v1/queue/jobs", func(w http.ResponseWriter, r *http.Request) {
		var req struct {
			Messages []struct {
				Content string `json:"content"`
			} `json:"messages"`
		}
		_ = json.NewDecoder(r.Body).Decode(&req)
		f.mu.Lock()
		id := fmt.Sprintf("job%d", len(f.jobs))
		f.jobs[id] = req.Messages[0].Content
		f.mu.Unlock()
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"id":%q,"status":"queued"}`, id)
	})
	mux.HandleFunc("GET /v1/queue/jobs/{id}", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		text := f.jobs[r.PathValue("id")]
		f.mu.Unlock()
		if f.fault == "fail-jobs" {
			fmt.Fprintf(w, `{"id":%q,"status":"failed","status_code":502,"error":{"message":"upstream"}}`, r.PathValue("id"))
			return
		}
		_ = json.NewEncoder(w).Encode(jobView{ID: r.PathValue("id"), Status: schema.JobSucceeded, StatusCode: 200, Result: completion("mock[cd]: " + text)})
	})
	return mux
}

func completion(content string) *schema.ChatCompletion {
	return &schema.ChatCompletion{Object: "chat.completion", Choices: []schema.Choice{{Message: schema.AssistantMessage{Role: "assistant", Content: content}}}}
}

// TestTrafficChecksAnswers runs the traffic against a fake gateway: an
// honest one passes with every kind answered; one that hands a caller
// another's answer, or lets jobs fail, fails the run; one that refuses at
// admission does not lose anything.
func TestTrafficChecksAnswers(t *testing.T) {
	for _, tc := range []struct {
		fault string
		check func(t *testing.T, s Summary)
	}{
		{"", func(t *testing.T, s Summary) {
			if !s.OK() || s.Total.Answered+s.Total.HungUp != 20 {
				t.Errorf("honest gateway: %+v, duplicated %d, problems %q", s.Total, s.Duplicated, s.Problems)
			}
			for _, k := range []Kind{KindChat, KindStream, KindJob} {
				if s.ByKind[k].Answered == 0 {
					t.Errorf("no %s answered: %+v", k, s.ByKind)
				}
			}
		}},
		{"swap", func(t *testing.T, s Summary) {
			if s.OK() || s.Total.Crossed == 0 {
				t.Errorf("crossed answers not caught: %+v, duplicated %d", s.Total, s.Duplicated)
			}
		}},
		{"fail-jobs", func(t *testing.T, s Summary) {
			if s.OK() || s.ByKind[KindJob].Lost != 4 {
				t.Errorf("failed jobs not counted lost: %+v", s.ByKind[KindJob])
			}
		}},
		{"overloaded", func(t *testing.T, s Summary) {
			if !s.OK() || s.ByKind[KindChat].Refused != 8 {
				t.Errorf("refusals at admission: %+v, ok %v", s.ByKind[KindChat], s.OK())
			}
		}},
	} {
		t.Run("fault="+tc.fault, func(t *testing.T) {
			f := &fakeGateway{fault: tc.fault, jobs: map[string]string{}}
			srv := httptest.NewServer(f.handler())
			defer srv.Close()
			l := NewLedger()
			tr := Traffic{Base: srv.URL, Model: "m", Rate: 100, Duration: 200 * time.Millisecond,
				HangupWithin: time.Second, Timeout: 10 * time.Second, Nonce: "n"}
			if err := tr.Run(t.Context(), l); err != nil {
				t.Fatal(err)
			}
			s := l.Summary()
			if s.Total.Sent != 20 || s.InFlight != 0 {
				t.Fatalf("sent %d, in flight %d; want 20, 0", s.Total.Sent, s.InFlight)
			}
			tc.check(t, s)
		})
	}
}
