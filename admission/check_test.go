package admission

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

const chat = `{"model":"m","messages":[{"role":"user","content":"hi"}]}`

// testCore is a core with one model, "m" (timeout 90 s), and no NATS:
// enough for Check, which does no I/O.
func testCore(t *testing.T, cfg Config) *Core {
	t.Helper()
	catalog, err := schema.NewCatalog([]schema.Model{{Alias: "m", LaaSModel: "claude-4-sonnet", PresetHash: "p", Timeout: 90 * time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.MaxBodyBytes == 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	c := &Core{cfg: cfg}
	c.catalog.Store(catalog)
	return c
}

func TestCheckRefuses(t *testing.T) {
	c := testCore(t, Config{MaxBodyBytes: 1 << 10})
	for _, tc := range []struct {
		name        string
		req         Request
		status      int
		code, param string
	}{
		{"invalid JSON", Request{ID: "r1", Body: []byte(`{`)}, 400, schema.CodeInvalidJSON, ""},
		{"bad role", Request{ID: "r1", Body: []byte(`{"model":"m","messages":[{"role":"wizard","content":"hi"}]}`)}, 400, schema.CodeInvalidValue, "messages[0].role"},
		{"unknown model", Request{ID: "r1", Body: []byte(`{"model":"x","messages":[{"role":"user","content":"hi"}]}`)}, 404, schema.CodeModelNotFound, "model"},
		{"preset override", Request{ID: "r1", Body: []byte(`{"model":"m","preset_hash":"q","messages":[{"role":"user","content":"hi"}]}`)}, 400, schema.CodePresetOverride, "preset_hash"},
		{"stream on a job", Request{ID: "r1", Door: DoorJobs, Job: &Job{}, Body: []byte(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)}, 400, schema.CodeUnsupported, "stream"},
		{"stream over NATS", Request{ID: "r1", Door: DoorMicro, Body: []byte(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)}, 400, schema.CodeUnsupported, "stream"},
		{"stream in a batch", Request{ID: "r1", Door: DoorBatch, Body: []byte(`{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}`)}, 400, schema.CodeInvalidValue, "stream"},
		{"bad id", Request{ID: "a.b", Body: []byte(chat)}, 400, schema.CodeInvalidValue, "id"},
		{"negative timeout", Request{ID: "r1", Body: []byte(chat), Timeout: -time.Second}, 400, schema.CodeInvalidValue, ""},
		{"timeout over the most", Request{ID: "r1", Body: []byte(chat), Timeout: schema.MaxRequestTimeout + time.Second}, 400, schema.CodeInvalidValue, ""},
		{"unknown lane", Request{ID: "r1", Body: []byte(chat), Lane: "express"}, 400, schema.CodeInvalidValue, ""},
		{"another gateway's reply subject", Request{ID: "r1", Body: []byte(chat), ReplyTo: "laas.cancel.r1"}, 400, schema.CodeInvalidValue, ""},
		{"results subject not the job's", Request{ID: "r1", Body: []byte(chat), Job: &Job{ResultsSubject: "laas.results.other"}}, 400, schema.CodeInvalidValue, "results_subject"},
		{"results subject outside laas.results", Request{ID: "r1", Body: []byte(chat), Job: &Job{ResultsSubject: "laas.cancel.r1"}}, 400, schema.CodeInvalidValue, "results_subject"},
		{"idempotency key too long", Request{ID: "r1", Body: []byte(chat), IdempotencyKey: strings.Repeat("k", MaxIdempotencyKeyLen+1)}, 400, schema.CodeInvalidValue, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := c.Check(tc.req)
			var e *schema.Error
			if !errors.As(err, &e) {
				t.Fatalf("Check = %v; want a *schema.Error", err)
			}
			if e.Status != tc.status || e.Code != tc.code || e.Param != tc.param {
				t.Errorf("refusal %d %s %q; want %d %s %q (%s)", e.Status, e.Code, e.Param, tc.status, tc.code, tc.param, e.Message)
			}
		})
	}
	t.Run("body over the limit", func(t *testing.T) {
		_, err := c.Check(Request{ID: "r1", Body: make([]byte, 1<<10+1)})
		var mbe *http.MaxBytesError
		if !errors.As(err, &mbe) || mbe.Limit != 1<<10 {
			t.Errorf("Check = %v; want *http.MaxBytesError of 1024", err)
		}
	})
	t.Run("a refusal keeps what was decoded", func(t *testing.T) {
		ck, err := c.Check(Request{ID: "r1", Body: []byte(`{"model":"x","stream":true,"messages":[{"role":"user","content":"hi"}]}`)})
		if err == nil || ck.Chat == nil || !ck.Chat.Stream || ck.Chat.Model != "x" {
			t.Errorf("Check = %+v, %v; want the decoded request beside the refusal", ck, err)
		}
	})
}

func TestCheckDecides(t *testing.T) {
	c := testCore(t, Config{})
	for _, tc := range []struct {
		name    string
		req     Request
		timeout time.Duration
		lane    Lane
	}{
		{"a waiting caller: the model's timeout, interactive", Request{Door: DoorChat}, 90 * time.Second, Interactive},
		{"a caller's own timeout and lane", Request{Door: DoorChat, Timeout: 5 * time.Second, Lane: Batch}, 5 * time.Second, Batch},
		{"a job: the longest timeout, batch", Request{Door: DoorJobs, Job: &Job{}}, schema.MaxRequestTimeout, Batch},
		{"service_tier flex: batch, waiting for the key's rpm", Request{Door: DoorChat, Lane: Interactive,
			Body: []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"service_tier":"flex"}`)}, 90 * time.Second, Batch},
		{"service_tier default: as asked", Request{Door: DoorChat,
			Body: []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}],"service_tier":"default"}`)}, 90 * time.Second, Interactive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.req.ID = "r1"
			if tc.req.Body == nil {
				tc.req.Body = []byte(chat)
			}
			ck, err := c.Check(tc.req)
			if err != nil {
				t.Fatal(err)
			}
			if ck.Timeout != tc.timeout || ck.Lane != tc.lane || ck.Model.Alias != "m" {
				t.Errorf("timeout %s, lane %s, model %q; want %s, %s, m", ck.Timeout, ck.Lane, ck.Model.Alias, tc.timeout, tc.lane)
			}
			if flex := ck.Chat.ServiceTier == "flex"; ck.QueueWait != flex {
				t.Errorf("QueueWait %v, want %v", ck.QueueWait, flex)
			}
		})
	}
}

// The answer key is the core's: namespaced by door (HTTP and NATS share
// one), hashed with the body, never the caller's key itself; a job has
// none (its id is its key); a batch line's is its batch's.
func TestCheckAnswerKey(t *testing.T) {
	c := testCore(t, Config{})
	key := func(door Door, idem, body string, job *Job) string {
		t.Helper()
		ck, err := c.Check(Request{ID: "r1", Door: door, Body: []byte(body), IdempotencyKey: idem, Job: job})
		if err != nil {
			t.Fatal(err)
		}
		return ck.AnswerKey
	}
	other := `{"model":"m","messages":[{"role":"user","content":"another"}]}`
	httpKey := key(DoorChat, "k1", chat, nil)
	switch {
	case !strings.HasPrefix(httpKey, "caller.") || strings.Contains(httpKey, "k1"):
		t.Errorf("HTTP answer key %q: want caller.<hash>, without the caller's key", httpKey)
	case key(DoorMicro, "k1", chat, nil) != httpKey:
		t.Errorf("the NATS endpoint's key differs from HTTP's: a retry over the other would run again")
	case key(DoorChat, "k1", other, nil) == httpKey:
		t.Errorf("the same key with another body gets the same answer key")
	case key(DoorChat, "k2", chat, nil) == httpKey:
		t.Errorf("another key gets the same answer key")
	case key(DoorChat, "", chat, nil) != "":
		t.Errorf("no idempotency key, yet an answer key")
	case key(DoorJobs, "k1", chat, &Job{}) != "":
		t.Errorf("a job has an answer key; its id is its key")
	}
	// One virtual key's answers are its own: the same idempotency key and
	// body from keys A and B, and from the admin, are three answers. The
	// admin's is what it was before keys had owners.
	as := func(token string) string {
		t.Helper()
		who := keys.Caller{}
		if token != "" {
			who.Key = &keys.Key{Token: token}
		}
		ck, err := c.Check(Request{ID: "r1", Door: DoorChat, Body: []byte(chat), IdempotencyKey: "k1", Caller: who})
		if err != nil {
			t.Fatal(err)
		}
		return ck.AnswerKey
	}
	sum := sha256.Sum256([]byte("caller\x00k1\x00" + chat))
	if a, b, admin := as("tok-a"), as("tok-b"), as(""); a == b || a == admin || b == admin || admin != "caller."+hex.EncodeToString(sum[:]) {
		t.Errorf("answer keys of A %q, B %q, the admin %q: want three, the admin's unchanged", a, b, admin)
	}
	ck, err := c.Check(Request{ID: "b1-3", Door: DoorBatch, Body: []byte(chat), Line: &BatchLine{BatchID: "b1", Line: 3}, IdempotencyKey: "ignored"})
	if err != nil || ck.AnswerKey != "batch.b1.3" {
		t.Errorf("batch line answer key %q, %v; want batch.b1.3", ck.AnswerKey, err)
	}
}

// TestCheckModelAccess: a virtual key may call only its models (401
// key_model_access_denied naming "model", at every door, since every door
// calls Check); a key with no models, and the admin, may call any.
func TestCheckModelAccess(t *testing.T) {
	c := testCore(t, Config{})
	for _, tc := range []struct {
		name   string
		caller keys.Caller
		denied bool
	}{
		{"the admin", keys.Caller{}, false},
		{"a key with the model", keys.Caller{Key: &keys.Key{Token: "t1", Models: []string{"other", "m"}}}, false},
		{"a key with every model", keys.Caller{Key: &keys.Key{Token: "t2", Models: []string{}}}, false},
		{"a key without the model", keys.Caller{Key: &keys.Key{Token: "t3", Models: []string{"other"}}}, true},
	} {
		for _, door := range []Door{DoorChat, DoorJobs, DoorMicro, DoorBatch} {
			t.Run(tc.name+"/"+string(door), func(t *testing.T) {
				_, err := c.Check(Request{ID: "r1", Door: door, Body: []byte(chat), Caller: tc.caller})
				if !tc.denied {
					if err != nil {
						t.Fatalf("Check = %v", err)
					}
					return
				}
				var e *schema.Error
				if !errors.As(err, &e) || e.Status != 401 || e.Code != keys.CodeModelAccessDenied || e.Param != "model" ||
					!strings.Contains(e.Message, "'m'") || !strings.Contains(e.Message, "models=[other]") {
					t.Errorf("Check = %v; want 401 key_model_access_denied on model, naming m and the key's models", err)
				}
			})
		}
	}
}
