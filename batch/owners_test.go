package batch

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

func keyCaller(token string) keys.Caller { return keys.Caller{Key: &keys.Key{Token: token}} }

// A file records its owner; PutFile without one leaves the admin's.
func TestStoreFileOwner(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	for _, owner := range []string{"tok-a", ""} {
		id := NewFileID()
		put, err := f.store.PutFile(ctx, id, owner, "in.jsonl", schema.PurposeBatch, 1, strings.NewReader("x\n"))
		if err != nil || put.CreatedBy != owner {
			t.Fatalf("PutFile by %q: %+v, %v", owner, put, err)
		}
		if got, err := f.store.File(ctx, id); err != nil || got.CreatedBy != owner {
			t.Errorf("File: created by %q, %v; want %q", got.CreatedBy, err, owner)
		}
		files, err := f.store.Files(ctx)
		if i := slices.IndexFunc(files, func(o schema.FileObject) bool { return o.ID == id }); err != nil || i < 0 || files[i].CreatedBy != owner {
			t.Errorf("Files: %+v, %v; want %s created by %q", files, err, id, owner)
		}
		if data, _ := json.Marshal(put); strings.Contains(string(data), "tok-a") || strings.Contains(string(data), "created_by") {
			t.Errorf("the file object shows its owner: %s", data)
		}
	}
}

// Batches filters before it pages: a key's pages hold its own batches
// only, limit of them, has_more only when more of its own follow; the
// admin pages through all. Batches recorded without an owner are the
// admin's.
func TestStoreBatchesOfOwner(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	t0 := time.Now()
	owners := []string{"tok-a", "tok-b", "tok-b", "tok-a", "", "tok-b", "tok-a"}
	byOwner := map[string][]string{} // newest first
	var all []string
	for i, owner := range owners {
		rec := &Record{Batch: NewBatch("file-x", nil, t0.Add(time.Duration(i)*time.Second)), CreatedBy: owner}
		if err := f.store.CreateBatch(ctx, rec); err != nil {
			t.Fatal(err)
		}
		byOwner[owner] = append([]string{rec.Batch.ID}, byOwner[owner]...)
		all = append([]string{rec.Batch.ID}, all...)
	}
	a, b := byOwner["tok-a"], byOwner["tok-b"]
	for _, tc := range []struct {
		name  string
		who   keys.Caller
		after string
		limit int
		want  []string
		more  bool
	}{
		{"A's first page", keyCaller("tok-a"), "", 2, a[:2], true},
		{"A's last page", keyCaller("tok-a"), a[1], 2, a[2:], false},
		{"A after B's batch", keyCaller("tok-a"), b[0], 10, a[1:], false},
		{"A's exact page", keyCaller("tok-a"), "", 3, a, false},
		{"B's all", keyCaller("tok-b"), "", 10, b, false},
		{"B's exact page, only others' after", keyCaller("tok-b"), "", 3, b, false},
		{"a key with none", keyCaller("tok-c"), "", 10, nil, false},
		{"the admin's first page", keys.Caller{}, "", 4, all[:4], true},
		{"the admin's last page", keys.Caller{}, all[3], 4, all[4:], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, more, err := f.store.Batches(ctx, tc.who, tc.after, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			for _, b := range got {
				ids = append(ids, b.ID)
			}
			if !slices.Equal(ids, tc.want) || more != tc.more {
				t.Errorf("Batches(%q, %d) = %q, more %v; want %q, more %v", tc.after, tc.limit, ids, more, tc.want, tc.more)
			}
		})
	}
}

// Cancel of another's batch is ErrNotFound, returns no record and
// changes nothing; the owner and the admin cancel.
func TestStoreCancelOfOwner(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	for _, tc := range []struct {
		name, owner string
		who         keys.Caller
		found       bool
	}{
		{"another key", "tok-a", keyCaller("tok-b"), false},
		{"a key, an admin's batch", "", keyCaller("tok-a"), false},
		{"the owner", "tok-a", keyCaller("tok-a"), true},
		{"the admin", "tok-a", keys.Caller{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := &Record{Batch: NewBatch("file-x", nil, time.Now()), CreatedBy: tc.owner}
			if err := f.store.CreateBatch(ctx, rec); err != nil {
				t.Fatal(err)
			}
			got, err := f.store.Cancel(ctx, tc.who, rec.Batch.ID, time.Now())
			if !tc.found {
				if !errors.Is(err, ErrNotFound) || got != nil {
					t.Errorf("Cancel: %+v, %v; want nil, ErrNotFound", got, err)
				}
				if after, _, _ := f.store.Batch(ctx, rec.Batch.ID); after.Batch.Status != schema.BatchValidating {
					t.Errorf("status after a refused cancel: %s", after.Batch.Status)
				}
				return
			}
			if err != nil || got.Batch.Status != schema.BatchCancelling || got.CreatedBy != tc.owner {
				t.Errorf("Cancel: %+v, %v; want cancelling, still created by %q", got, err, tc.owner)
			}
		})
	}
}

// A key's batch runs as that key: its lines are checked and queued with
// the key as caller (the envelope's owner), and its output and error
// files are the key's.
func TestRunnerRunsAsCreator(t *testing.T) {
	f := newFixture(t)
	recs := f.watchRecords(t)
	var mu sync.Mutex
	lineOwners := map[string]string{}
	sub, err := f.q.Conn.Subscribe(schema.SubjectBatch, func(m *nats.Msg) {
		var env schema.Envelope
		if err := json.Unmarshal(m.Data, &env); err == nil {
			mu.Lock()
			lineOwners[env.ID] = env.Owner
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	f.worker(t)
	f.runner(t, RunnerConfig{Owner: "runner", LeaseTTL: time.Minute, ScanInterval: 20 * time.Millisecond, SaveInterval: 20 * time.Millisecond})
	b := f.newBatchBy(t, "tok-a", inputLine("c0"), "not json", inputLine("c2"))
	waitFor(t, "the batch to complete", func() bool { return slices.Contains(recs.changes(b.ID, status), schema.BatchCompleted) })
	mu.Lock()
	if want := map[string]string{JobID(b.ID, 0): "tok-a", JobID(b.ID, 2): "tok-a"}; len(lineOwners) != 2 || lineOwners[JobID(b.ID, 0)] != "tok-a" || lineOwners[JobID(b.ID, 2)] != "tok-a" {
		t.Errorf("lines queued with owners %v; want %v", lineOwners, want)
	}
	mu.Unlock()
	rec, _, err := f.store.Batch(testCtx(t), b.ID)
	if err != nil || rec.CreatedBy != "tok-a" || rec.Batch.OutputFileID == nil || rec.Batch.ErrorFileID == nil {
		t.Fatalf("batch: %+v, %v; want created by tok-a with an output and an error file", rec, err)
	}
	for _, id := range []string{*rec.Batch.OutputFileID, *rec.Batch.ErrorFileID} {
		if file, err := f.store.File(testCtx(t), id); err != nil || file.CreatedBy != "tok-a" {
			t.Errorf("file %s: created by %q, %v; want tok-a", id, file.CreatedBy, err)
		}
	}
}
