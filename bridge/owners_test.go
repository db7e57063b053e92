package bridge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/laas-bridge/laas-bridge/batch"
	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Two virtual keys, A and B, as Config.Keys finds them, and the master
// key (the admin).
const (
	secretA, tokenA = "sk-key-a", "tok-a"
	secretB, tokenB = "sk-key-b", "tok-b"
)

// ownersFixture is a gateway whose Keys know keys A and B. Its suites
// create more of key A's batches than BatchMaxPerOwner's default lets a
// key have unfinished (none of them runs here); the cap has its own test,
// TestBatchMaxPerOwner.
func ownersFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixture(t, Config{MasterKey: "sk-master", Keys: fakeKeys{secretA: {Token: tokenA}, secretB: {Token: tokenB}}, BatchMaxPerOwner: 1000})
}

// fakeKeys is a KeyLookup of fixed keys, by secret.
type fakeKeys map[string]*keys.Key

func (f fakeKeys) Lookup(secret string) (*keys.Key, bool) { k, ok := f[secret]; return k, ok }

// auth is the Authorization header of a secret.
func auth(secret string) []string { return []string{"Authorization", "Bearer " + secret} }

// upload stores a one-line batch input file as secret's caller.
func (f *fixture) upload(t *testing.T, secret string) string {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	_ = mw.WriteField("purpose", "batch")
	fw, _ := mw.CreateFormFile("file", "in.jsonl")
	line := `{"custom_id":"c0","method":"POST","url":"/v1/chat/completions","body":` + chatBody("claude-3.5-sonnet", "hi") + "}\n"
	_, _ = fw.Write([]byte(line))
	_ = mw.Close()
	resp, body := f.do(t, "POST", "/v1/files", buf.String(), append(auth(secret), "Content-Type", mw.FormDataContentType())...)
	var fo schema.FileObject
	if resp.StatusCode != 200 || json.Unmarshal(body, &fo) != nil || !batch.ValidFileID(fo.ID) {
		t.Fatalf("upload: %d %s", resp.StatusCode, body)
	}
	return fo.ID
}

// newBatch creates a batch on file as secret's caller.
func (f *fixture) newBatch(t *testing.T, secret, file string) string {
	t.Helper()
	resp, body := f.do(t, "POST", "/v1/batches", batchRequest(file), auth(secret)...)
	var b schema.Batch
	if resp.StatusCode != 200 || json.Unmarshal(body, &b) != nil || !batch.ValidBatchID(b.ID) {
		t.Fatalf("create batch: %d %s", resp.StatusCode, body)
	}
	return b.ID
}

func batchRequest(file string) string {
	return fmt.Sprintf(`{"input_file_id":%q,"endpoint":"/v1/chat/completions","completion_window":"24h"}`, file)
}

// owned is one caller's file, batch and job.
type owned struct{ file, batch, job string }

func (f *fixture) makeOwned(t *testing.T, secret string) owned {
	t.Helper()
	o := owned{file: f.upload(t, secret)}
	o.batch = f.newBatch(t, secret, o.file)
	resp, body := f.do(t, "POST", "/v1/queue/jobs", chatBody("claude-3.5-sonnet", "job"), auth(secret)...)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit job: %d %s", resp.StatusCode, body)
	}
	o.job = decodeJob(t, body).ID
	return o
}

// An action on one caller's file, batch or job.
type ownedAction struct {
	name, method string
	path         func(owned) string
	body         func(owned) string // nil: none
}

var ownedActions = []ownedAction{
	{"get file", "GET", func(o owned) string { return "/v1/files/" + o.file }, nil},
	{"file content", "GET", func(o owned) string { return "/v1/files/" + o.file + "/content" }, nil},
	{"batch from file", "POST", func(owned) string { return "/v1/batches" }, func(o owned) string { return batchRequest(o.file) }},
	{"get batch", "GET", func(o owned) string { return "/v1/batches/" + o.batch }, nil},
	{"cancel batch", "POST", func(o owned) string { return "/v1/batches/" + o.batch + "/cancel" }, nil},
	{"get job", "GET", func(o owned) string { return "/v1/queue/jobs/" + o.job }, nil},
	{"wait for job", "GET", func(o owned) string { return "/v1/queue/jobs/" + o.job + "?wait=0.2" }, nil},
	{"delete job", "DELETE", func(o owned) string { return "/v1/queue/jobs/" + o.job }, nil},
	{"delete file", "DELETE", func(o owned) string { return "/v1/files/" + o.file }, nil},
}

func (a ownedAction) do(t *testing.T, f *fixture, o owned, secret string) (*http.Response, []byte) {
	t.Helper()
	body := ""
	if a.body != nil {
		body = a.body(o)
	}
	return f.do(t, a.method, a.path(o), body, auth(secret)...)
}

// A key sees and acts on its own files, batches and jobs only: another's
// (or the admin's, as every record made before owners were) answers 404
// exactly as an id that was never made does, with the id in its place;
// nothing changes. The owner and the admin act on them. No answer shows
// the owner's token.
func TestCallersSeeOnlyTheirOwn(t *testing.T) {
	f := ownersFixture(t)
	missing := owned{file: batch.NewFileID(), batch: batch.NewBatchID(time.Now()), job: schema.NewID()}
	for _, tc := range []struct{ name, owner, intruder string }{
		{"B on A's", secretA, secretB},
		{"A on the admin's", "sk-master", secretA},
	} {
		theirs := f.makeOwned(t, tc.owner)
		for _, a := range ownedActions {
			t.Run(tc.name+"/"+a.name, func(t *testing.T) {
				resp, body := a.do(t, f, theirs, tc.intruder)
				wantResp, wantBody := a.do(t, f, missing, tc.intruder)
				if wantResp.StatusCode != http.StatusNotFound {
					t.Fatalf("a missing id: %d %s; want 404", wantResp.StatusCode, wantBody)
				}
				got := strings.NewReplacer(theirs.file, "ID", theirs.batch, "ID", theirs.job, "ID").Replace(string(body))
				want := strings.NewReplacer(missing.file, "ID", missing.batch, "ID", missing.job, "ID").Replace(string(wantBody))
				if resp.StatusCode != http.StatusNotFound || got != want {
					t.Errorf("%s %s: %d %s\nwant 404 %s", a.method, a.path(theirs), resp.StatusCode, body, wantBody)
				}
			})
		}
		// Nothing was deleted or cancelled.
		if resp, body := f.do(t, "GET", "/v1/files/"+theirs.file, "", auth(tc.owner)...); resp.StatusCode != 200 {
			t.Errorf("%s: the file after the intruder: %d %s", tc.name, resp.StatusCode, body)
		}
		if resp, body := f.do(t, "GET", "/v1/batches/"+theirs.batch, "", auth(tc.owner)...); resp.StatusCode != 200 || !strings.Contains(string(body), `"status":"validating"`) {
			t.Errorf("%s: the batch after the intruder: %d %s", tc.name, resp.StatusCode, body)
		}
		if resp, body := f.do(t, "GET", "/v1/queue/jobs/"+theirs.job, "", auth(tc.owner)...); resp.StatusCode != 200 || decodeJob(t, body).Status != schema.JobQueued {
			t.Errorf("%s: the job after the intruder: %d %s", tc.name, resp.StatusCode, body)
		}
	}
	for _, who := range []struct{ name, secret string }{{"A", secretA}, {"the admin", "sk-master"}} {
		for _, a := range ownedActions {
			t.Run(who.name+" on A's/"+a.name, func(t *testing.T) {
				mine := f.makeOwned(t, secretA)
				resp, body := a.do(t, f, mine, who.secret)
				if resp.StatusCode != http.StatusOK {
					t.Errorf("%s %s: %d %s; want 200", a.method, a.path(mine), resp.StatusCode, body)
				}
				if bytes.Contains(body, []byte(tokenA)) || bytes.Contains(body, []byte("created_by")) {
					t.Errorf("the answer shows its owner: %s", body)
				}
			})
		}
	}
}

// A job stays its owner's once a worker has run it (the worker rewrites
// its state from the envelope, whose owner the core set).
func TestFinishedJobKeepsOwner(t *testing.T) {
	f := ownersFixture(t)
	resp, body := f.do(t, "POST", "/v1/queue/jobs", chatBody("claude-3.5-sonnet", "job"), auth(secretA)...)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit: %d %s", resp.StatusCode, body)
	}
	id := decodeJob(t, body).ID
	if env, _ := f.runOneJob(t, echoAnswer); env.ID != id || env.Owner != tokenA {
		t.Fatalf("envelope %s owned by %q; want %s owned by %s", env.ID, env.Owner, id, tokenA)
	}
	if resp, body := f.do(t, "GET", "/v1/queue/jobs/"+id, "", auth(secretA)...); resp.StatusCode != 200 || decodeJob(t, body).Status != schema.JobSucceeded {
		t.Errorf("A's finished job: %d %s", resp.StatusCode, body)
	}
	if resp, body := f.do(t, "GET", "/v1/queue/jobs/"+id, "", auth(secretB)...); resp.StatusCode != http.StatusNotFound {
		t.Errorf("B on A's finished job: %d %s", resp.StatusCode, body)
	}
}

// A chat request carries its caller to the core: the envelope names its
// owner, and an Idempotency-Key is the caller's own, so B sending A's key
// and body runs its own request instead of receiving A's answer.
func TestIdempotencyKeyIsTheCallers(t *testing.T) {
	f := ownersFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var mu sync.Mutex
	var owners []string
	f.fakeWorker(t, ctx, 1, func(env schema.Envelope) schema.Reply {
		mu.Lock()
		owners = append(owners, env.Owner)
		mu.Unlock()
		return echoAnswer(env)
	})
	for _, secret := range []string{secretA, secretB} {
		resp, body := f.do(t, "POST", "/v1/chat/completions", chatBody("claude-3.5-sonnet", "hi"),
			append(auth(secret), HeaderIdempotencyKey, "same-key", HeaderRequestTimeout, "10")...)
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d %s", secret, resp.StatusCode, body)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if !slices.Equal(owners, []string{tokenA, tokenB}) {
		t.Errorf("the worker ran requests of %q; want one of A's, then one of B's", owners)
	}
}

// Lists hold the caller's own only (the admin's: all), and a key's pages
// of batches are pages of its own.
func TestCallersListOnlyTheirOwn(t *testing.T) {
	f := ownersFixture(t)
	a1 := f.makeOwned(t, secretA)
	b1 := f.makeOwned(t, secretB)
	a2 := f.makeOwned(t, secretA)
	admin := f.makeOwned(t, "sk-master")
	ids := func(t *testing.T, path, secret string) ([]string, bool) {
		t.Helper()
		resp, body := f.do(t, "GET", path, "", auth(secret)...)
		var l struct {
			Data []struct {
				ID string `json:"id"`
			} `json:"data"`
			HasMore bool `json:"has_more"`
		}
		if resp.StatusCode != 200 || json.Unmarshal(body, &l) != nil {
			t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
		}
		if bytes.Contains(body, []byte(tokenA)) || bytes.Contains(body, []byte(tokenB)) {
			t.Errorf("GET %s shows an owner: %s", path, body)
		}
		var out []string
		for _, d := range l.Data {
			out = append(out, d.ID)
		}
		return out, l.HasMore
	}
	// Files list newest first, to the second; batches to the millisecond
	// (batch ids sort by time, then at random): compare files as sets and
	// batches in descending id order.
	sorted := func(s []string) []string { return slices.Sorted(slices.Values(s)) }
	newestFirst := func(s ...string) []string {
		r := sorted(s)
		slices.Reverse(r)
		return r
	}
	for _, tc := range []struct {
		name, secret string
		files        []string
		batches      []string
	}{
		{"A", secretA, []string{a1.file, a2.file}, newestFirst(a1.batch, a2.batch)},
		{"B", secretB, []string{b1.file}, []string{b1.batch}},
		{"the admin", "sk-master", []string{a1.file, b1.file, a2.file, admin.file}, newestFirst(a1.batch, b1.batch, a2.batch, admin.batch)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := ids(t, "/v1/files", tc.secret); !slices.Equal(sorted(got), sorted(tc.files)) {
				t.Errorf("files %q; want %q", got, tc.files)
			}
			if got, more := ids(t, "/v1/batches", tc.secret); !slices.Equal(got, tc.batches) || more {
				t.Errorf("batches %q, has_more %v; want %q", got, more, tc.batches)
			}
		})
	}
	// A's pages of one: its newest, then (after it) its other; B's batch
	// is on neither.
	mine := newestFirst(a1.batch, a2.batch)
	if got, more := ids(t, "/v1/batches?limit=1", secretA); !slices.Equal(got, mine[:1]) || !more {
		t.Errorf("A's first page: %q, has_more %v; want %q, true", got, more, mine[:1])
	}
	if got, more := ids(t, "/v1/batches?limit=1&after="+mine[0], secretA); !slices.Equal(got, mine[1:]) || more {
		t.Errorf("A's second page: %q, has_more %v; want %q, false", got, more, mine[1:])
	}
}

// Request ids (and so job ids) are schema.NewID: 128 random bits, so one
// caller's id tells nothing of another's.
func TestRequestIDsAreRandom(t *testing.T) {
	e := echo.New()
	h := requestID(func(echo.Context) error { return nil })
	ids := make([]string, 1000)
	for i := range ids {
		rec := httptest.NewRecorder()
		if err := h(e.NewContext(httptest.NewRequest(http.MethodGet, "/", nil), rec)); err != nil {
			t.Fatal(err)
		}
		ids[i] = rec.Header().Get(HeaderRequestID)
		if !schema.ValidRequestID(ids[i]) {
			t.Fatalf("request id %q is not valid", ids[i])
		}
	}
	checkRandomIDs(t, ids)
}

// checkRandomIDs asserts that ids are schema.IDLen of [a-z2-7], that each character varies, and that no
// two of them share more than a 6-character prefix (two of 1000 random ids
// do with probability about 5e-4; consecutive NUIDs share 12 characters or
// more).
func checkRandomIDs(t *testing.T, ids []string) {
	t.Helper()
	for _, id := range ids {
		if len(id) != schema.IDLen || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("id %q; want %d of [a-z2-7]", id, schema.IDLen)
		}
	}
	for i := range schema.IDLen { // a fixed part would be the same in all
		if !slices.ContainsFunc(ids, func(id string) bool { return id[i] != ids[0][i] }) {
			t.Errorf("character %d is %q in all %d ids: not random", i, ids[0][i], len(ids))
		}
	}
	sorted := slices.Sorted(slices.Values(ids))
	for i := 1; i < len(sorted); i++ {
		n := 0
		for n < len(sorted[i]) && sorted[i][n] == sorted[i-1][n] {
			n++
		}
		if n > 6 {
			t.Fatalf("%q and %q share a %d-character prefix: sequential, not random", sorted[i-1], sorted[i], n)
		}
	}
}
