package schema_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

func TestSubjectNames(t *testing.T) {
	// Other programs publish to these names: changing one breaks them.
	tests := []struct{ name, got, want string }{
		{"stream", schema.StreamRequests, "LAAS_REQUESTS"},
		{"requests", schema.SubjectRequests, "laas.requests"},
		{"submit", schema.SubjectSubmit, "laas.requests.batch"},
		{"submit interactive", schema.SubjectSubmitInteractive, "laas.requests.interactive"},
		{"interactive lane", schema.SubjectInteractive, "laas.requests.lane.interactive"},
		{"batch lane", schema.SubjectBatch, "laas.requests.lane.batch"},
		{"consumer", schema.ConsumerWorkers, "laas-workers"},
		{"batch consumer", schema.ConsumerBatch, "laas-workers-batch"},
		{"admission consumer", schema.ConsumerAdmission, "laas-admission"},
		{"replies", schema.SubjectReplies, "laas.reply"},
		{"direct replies", schema.SubjectDirectReplies, "laas.direct"},
		{"bodies bucket", schema.BucketBodies, "LAAS_BODIES"},
		{"reply-to header", schema.HeaderReplyTo, "Laas-Reply-To"},
		{"msg id header", schema.HeaderMsgID, "Nats-Msg-Id"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestDirectReplySubject(t *testing.T) {
	tests := []struct {
		name, replyTo, want string
		ok                  bool
	}{
		{"reply subject", "laas.reply.gw-1.req_2", "laas.direct.gw-1.req_2", true},
		{"not a reply subject", "laas.requests.interactive", "", false},
		{"wildcard", "laas.reply.gw.>", "", false},
		{"extra token", "laas.reply.gw.a.b", "", false},
		{"no id", "laas.reply.gw", "", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := schema.DirectReplySubject(tc.replyTo)
			if got != tc.want || ok != tc.ok {
				t.Errorf("DirectReplySubject(%q) = %q, %v; want %q, %v", tc.replyTo, got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	at := time.Date(2025, 11, 25, 10, 0, 0, 0, time.UTC)
	tests := []struct {
		name string
		env  schema.Envelope
		want string
	}{
		{
			name: "request inline",
			env: schema.Envelope{
				ID: "req-1", Model: "gpt-4o", EnqueuedAt: at, Deadline: at.Add(time.Minute),
				Request: json.RawMessage(`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}`),
			},
			want: `{"id":"req-1","model":"gpt-4o","enqueued_at":"2025-11-25T10:00:00Z","deadline":"2025-11-25T10:01:00Z",` +
				`"request":{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}}`,
		},
		{
			name: "request by reference",
			env:  schema.Envelope{ID: "req-2", Model: "m", EnqueuedAt: at, Deadline: at.Add(10 * time.Minute), RequestRef: "req-2"},
			want: `{"id":"req-2","model":"m","enqueued_at":"2025-11-25T10:00:00Z","deadline":"2025-11-25T10:10:00Z","request_ref":"req-2"}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := marshal(t, tc.env)
			if got != tc.want {
				t.Fatalf("json.Marshal(env) =\n\t%s\nwant\n\t%s", got, tc.want)
			}
			var back schema.Envelope
			if err := json.Unmarshal([]byte(got), &back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tc.env) {
				t.Errorf("round trip = %+v, want %+v", back, tc.env)
			}
		})
	}
}

func TestReplyErr(t *testing.T) {
	tests := []struct {
		name     string
		err      *schema.Error
		wantJSON string
	}{
		{
			name: "rate limited with retry after",
			err: &schema.Error{Status: http.StatusTooManyRequests, Type: schema.TypeRateLimit, Code: schema.CodeRateLimitExceeded,
				Message: "LaaS is rate limiting this bridge.", RetryAfter: 7},
			wantJSON: `{"id":"req-1","status":429,"error":{"message":"LaaS is rate limiting this bridge.","type":"rate_limit_error","param":null,"code":"rate_limit_exceeded"},` +
				`"retry_after":7,"attempts":0,"queue_ms":0,"upstream_ms":0}`,
		},
		{
			name:     "invalid request with param",
			err:      schema.Invalid("messages[0].role", schema.CodeInvalidValue, "bad role"),
			wantJSON: `{"id":"req-1","status":400,"error":{"message":"bad role","type":"invalid_request_error","param":"messages[0].role","code":"invalid_value"},"attempts":0,"queue_ms":0,"upstream_ms":0}`,
		},
		{
			name:     "no code no param",
			err:      &schema.Error{Status: http.StatusInternalServerError, Type: schema.TypeServer, Message: "internal error", Cause: errors.New("secret cause")},
			wantJSON: `{"id":"req-1","status":500,"error":{"message":"internal error","type":"server_error","param":null,"code":null},"attempts":0,"queue_ms":0,"upstream_ms":0}`,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := schema.ErrorReply("req-1", tc.err)
			wantError(t, r.Err(), tc.err)

			data := marshal(t, r)
			if data != tc.wantJSON {
				t.Fatalf("json.Marshal(reply) =\n\t%s\nwant\n\t%s", data, tc.wantJSON)
			}
			var back schema.Reply
			if err := json.Unmarshal([]byte(data), &back); err != nil {
				t.Fatal(err)
			}
			got := back.Err()
			wantError(t, got, tc.err)
			if got.Cause != nil {
				t.Errorf("Cause after the round trip = %v, want nil", got.Cause)
			}
		})
	}
}

func TestReplyErrSuccess(t *testing.T) {
	data := `{"id":"req-2","status":200,"completion":{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[],"system_fingerprint":null},"attempts":1,"queue_ms":3,"upstream_ms":40}`
	var r schema.Reply
	if err := json.Unmarshal([]byte(data), &r); err != nil {
		t.Fatal(err)
	}
	if err := r.Err(); err != nil {
		t.Errorf("Err() = %v, want nil", err)
	}
	if r.Completion == nil || r.Completion.ID != "c" || r.Attempts != 1 || r.QueueMs != 3 || r.UpstreamMs != 40 {
		t.Errorf("reply = %+v", r)
	}
	if got := (&schema.Reply{ID: "x", Status: http.StatusOK}).Err(); got != nil {
		t.Errorf("Err() of a zero success = %v, want nil", got)
	}
}

func TestValidRequestIDBytes(t *testing.T) {
	for id, want := range map[string]bool{
		"":                      false,
		"a":                     true,
		"req_01-AZaz09":         true,
		strings.Repeat("x", 64): true,
		strings.Repeat("x", 65): false,
		"a.b":                   false, // a subject separator
		"a*":                    false,
		"a>":                    false,
		"a b":                   false,
		"é":                     false,
		"a/b":                   false,
		"a\x00":                 false,
	} {
		if got := schema.ValidRequestID(id); got != want {
			t.Errorf("ValidRequestID(%q) = %v, want %v", id, got, want)
		}
	}
	// Every single byte: only [A-Za-z0-9_-] names an id.
	oracle := regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)
	for b := 0; b < 256; b++ {
		id := "x" + string([]byte{byte(b)})
		if got, want := schema.ValidRequestID(id), oracle.MatchString(id); got != want {
			t.Errorf("ValidRequestID(%q) = %v, want %v", id, got, want)
		}
	}
}

// TestRunDigest: what a LaaS call ran is named by all three of its parts,
// which cannot run into each other.
func TestRunDigest(t *testing.T) {
	base := schema.RunDigest("claude-4-sonnet", "ANTHROPIC", "p1")
	if len(base) != 16 || base != schema.RunDigest("claude-4-sonnet", "ANTHROPIC", "p1") {
		t.Fatalf("RunDigest = %q: want 16 hex characters, the same each time", base)
	}
	for _, other := range [][3]string{
		{"claude-3.5-sonnet", "ANTHROPIC", "p1"}, {"claude-4-sonnet", "", "p1"}, {"claude-4-sonnet", "ANTHROPIC", "p2"},
		{"claude-4-sonnetA", "NTHROPIC", "p1"},
	} {
		if schema.RunDigest(other[0], other[1], other[2]) == base {
			t.Errorf("RunDigest%q equals RunDigest of claude-4-sonnet/ANTHROPIC/p1", other)
		}
	}
}
