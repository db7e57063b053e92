package batch

import (
	"errors"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

func TestNewBatch(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	meta := map[string]string{"team": "search"}
	b := NewBatch("file-abc", meta, now)
	if !ValidBatchID(b.ID) || !strings.HasPrefix(b.ID, "batch_") {
		t.Errorf("id %q is not a valid batch id", b.ID)
	}
	want := schema.Batch{
		ID: b.ID, Object: "batch", Endpoint: "/v1/chat/completions", InputFileID: "file-abc", CompletionWindow: "24h",
		Status: schema.BatchValidating, CreatedAt: now.Unix(), ExpiresAt: new(now.Add(24 * time.Hour).Unix()), Metadata: meta,
	}
	if *b.ExpiresAt != *want.ExpiresAt {
		t.Errorf("expires_at %d; want %d", *b.ExpiresAt, *want.ExpiresAt)
	}
	b.ExpiresAt = want.ExpiresAt
	if got, wantS := jsonString(t, b), jsonString(t, want); got != wantS {
		t.Errorf("NewBatch:\n got %s\nwant %s", got, wantS)
	}
}

// Batch ids sort by creation time, newest last, to the millisecond; ids
// made in the same millisecond differ.
func TestNewBatchIDOrder(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	var ids []string
	for _, d := range []time.Duration{0, time.Millisecond, time.Second, time.Hour, 24 * 365 * time.Hour} {
		ids = append(ids, NewBatchID(t0.Add(d)))
	}
	if !slices.IsSorted(ids) {
		t.Errorf("ids of later batches do not sort later: %q", ids)
	}
	a, b := NewBatchID(t0), NewBatchID(t0)
	if a == b || len(a) != len(b) {
		t.Errorf("two ids in one millisecond: %q, %q", a, b)
	}
	for _, id := range append(ids, a) {
		if !ValidBatchID(id) {
			t.Errorf("%q is not a valid batch id", id)
		}
	}
}

// File and batch ids carry schema.NewID after their fixed part: 128
// random bits, so that no id is guessed from another.
func TestIDsAreRandom(t *testing.T) {
	t0 := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	fixed := "batch_" + NewBatchID(t0)[6:15] // one millisecond: the time part is fixed too
	for _, tc := range []struct {
		name, prefix string
		next         func() string
	}{
		{"file", "file-", NewFileID},
		{"batch", fixed, func() string { return NewBatchID(t0) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rest := make([]string, 1000)
			for i := range rest {
				id := tc.next()
				r, ok := strings.CutPrefix(id, tc.prefix)
				if !ok || !ValidFileID(id) && !ValidBatchID(id) {
					t.Fatalf("id %q: not %s<random>, or not valid", id, tc.prefix)
				}
				rest[i] = r
			}
			checkRandomIDs(t, rest)
		})
	}
}

// checkRandomIDs asserts that ids (the random parts) are schema.IDLen of
// [a-z2-7], that each character varies, and that no two of them share more than a 6-character prefix
// (two of 1000 random ids do with probability about 5e-4; consecutive
// NUIDs share 12 characters or more).
func checkRandomIDs(t *testing.T, ids []string) {
	t.Helper()
	for _, id := range ids {
		if len(id) != schema.IDLen || strings.Trim(id, "abcdefghijklmnopqrstuvwxyz234567") != "" {
			t.Fatalf("random part %q; want %d of [a-z2-7]", id, schema.IDLen)
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

func TestStoreCreateAndRead(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	rec := &Record{Batch: NewBatch("file-x", nil, time.Now()), Valid: 3}
	if err := f.store.CreateBatch(ctx, rec); err != nil {
		t.Fatal(err)
	}
	got, rev, err := f.store.Batch(ctx, rec.Batch.ID)
	if err != nil || rev == 0 || jsonString(t, got) != jsonString(t, rec) {
		t.Fatalf("Batch: %+v, revision %d, %v; want %+v", got, rev, err, rec)
	}
	if err := f.store.CreateBatch(ctx, rec); err == nil {
		t.Error("a second CreateBatch with the same id succeeded")
	}
	active, err := f.store.activeIDs(ctx)
	if _, marked := active[rec.Batch.ID]; err != nil || len(active) != 1 || !marked {
		t.Errorf("active batches: %v, %v; want %s", active, err, rec.Batch.ID)
	}
	for range 2 { // a second time is not an error
		if err := f.store.deactivate(ctx, rec.Batch.ID); err != nil {
			t.Fatal(err)
		}
	}
	if active, err := f.store.activeIDs(ctx); len(active) != 0 {
		t.Errorf("active batches after deactivate: %v, %v", active, err)
	}
	for _, id := range []string{NewBatchID(time.Now()), "batch_", "file-x", "b.batch_x", "batch_a.b"} {
		if _, _, err := f.store.Batch(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Batch(%q): %v; want ErrNotFound", id, err)
		}
	}
}

// Update applies each change to the newest record: concurrent updates all
// land; a mutation that fails writes nothing.
func TestStoreUpdate(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	rec := &Record{Batch: NewBatch("file-x", nil, time.Now())}
	if err := f.store.CreateBatch(ctx, rec); err != nil {
		t.Fatal(err)
	}
	const n = 8
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if _, err := f.store.Update(ctx, rec.Batch.ID, func(r *Record) error { r.Published++; return nil }); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	got, rev, err := f.store.Batch(ctx, rec.Batch.ID)
	if err != nil || got.Published != n {
		t.Fatalf("after %d concurrent increments: published %d, %v", n, got.Published, err)
	}
	refuse := errors.New("refused")
	if _, err := f.store.Update(ctx, rec.Batch.ID, func(r *Record) error { r.Published = 100; return refuse }); err != refuse {
		t.Errorf("Update with a failing mutation: %v; want its error as is", err)
	}
	if again, rev2, _ := f.store.Batch(ctx, rec.Batch.ID); again.Published != n || rev2 != rev {
		t.Errorf("a failed mutation wrote: published %d (revision %d -> %d)", again.Published, rev, rev2)
	}
	if _, err := f.store.Update(ctx, NewBatchID(time.Now()), func(*Record) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("Update of a batch that does not exist: %v; want ErrNotFound", err)
	}
}

func TestStoreCancel(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	now := time.Now()
	for _, tc := range []struct {
		status string
		want   string // the status after Cancel
		err    func(error) bool
	}{
		{schema.BatchValidating, schema.BatchCancelling, nil},
		{schema.BatchInProgress, schema.BatchCancelling, nil},
		{schema.BatchCancelling, schema.BatchCancelling, IsUnchanged},
		{schema.BatchCancelled, schema.BatchCancelled, IsUnchanged},
		{schema.BatchFinalizing, schema.BatchFinalizing, isNotCancellable},
		{schema.BatchCompleted, schema.BatchCompleted, isNotCancellable},
		{schema.BatchFailed, schema.BatchFailed, isNotCancellable},
		{schema.BatchExpired, schema.BatchExpired, isNotCancellable},
	} {
		t.Run(tc.status, func(t *testing.T) {
			rec := &Record{Batch: NewBatch("file-x", nil, now)}
			rec.Batch.Status = tc.status
			if err := f.store.CreateBatch(ctx, rec); err != nil {
				t.Fatal(err)
			}
			got, err := f.store.Cancel(ctx, keys.Caller{}, rec.Batch.ID, now)
			if tc.err == nil && err != nil || tc.err != nil && !tc.err(err) {
				t.Fatalf("Cancel: %v", err)
			}
			stored, _, serr := f.store.Batch(ctx, rec.Batch.ID)
			if serr != nil || got.Batch.Status != tc.want || stored.Batch.Status != tc.want {
				t.Fatalf("status after Cancel: returned %q, stored %q (%v); want %q", got.Batch.Status, stored.Batch.Status, serr, tc.want)
			}
			if moved := tc.err == nil; moved != (stored.Batch.CancellingAt != nil) || moved && *stored.Batch.CancellingAt != now.Unix() {
				t.Errorf("cancelling_at %v; want it set to now only when the batch moved to cancelling", stored.Batch.CancellingAt)
			}
		})
	}
}

func isNotCancellable(err error) bool { return errors.Is(err, ErrNotCancellable) }

// Batches pages newest first: limit items, then has_more; after names the
// last item of the previous page.
func TestStoreBatchesPages(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	t0 := time.Now()
	var ids []string // newest first
	for i := range 5 {
		rec := &Record{Batch: NewBatch("file-x", nil, t0.Add(time.Duration(i)*time.Second))}
		if err := f.store.CreateBatch(ctx, rec); err != nil {
			t.Fatal(err)
		}
		ids = append([]string{rec.Batch.ID}, ids...)
	}
	// A batch whose record was never written (its gateway died after the
	// marker) is not listed.
	if _, err := f.store.batches.Put(ctx, activeKey(NewBatchID(t0.Add(time.Minute))), nil); err != nil {
		t.Fatal(err)
	}
	between := NewBatchID(t0.Add(1500 * time.Millisecond)) // between ids[3] and ids[2], never stored
	for _, tc := range []struct {
		name  string
		after string
		limit int
		want  []string
		more  bool
	}{
		{"first page", "", 2, ids[:2], true},
		{"second page", ids[1], 2, ids[2:4], true},
		{"last page", ids[3], 2, ids[4:], false},
		{"a page of exactly what is left", ids[0], 4, ids[1:], false},
		{"all in one page", "", 10, ids, false},
		{"after the oldest", ids[4], 2, nil, false},
		{"after an id never stored", between, 10, ids[3:], false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, more, err := f.store.Batches(ctx, keys.Caller{}, tc.after, tc.limit)
			if err != nil {
				t.Fatal(err)
			}
			var gotIDs []string
			for _, b := range got {
				gotIDs = append(gotIDs, b.ID)
			}
			if !slices.Equal(gotIDs, tc.want) || more != tc.more {
				t.Errorf("Batches(%q, %d) = %q, more %v; want %q, more %v", tc.after, tc.limit, gotIDs, more, tc.want, tc.more)
			}
		})
	}
}

func TestStoreFiles(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	var ids []string
	for i, content := range []string{"first\n", "second\nfile\n"} {
		id := NewFileID()
		obj, err := f.store.PutFile(ctx, id, "", "in.jsonl", schema.PurposeBatch, i+1, strings.NewReader(content))
		if err != nil {
			t.Fatal(err)
		}
		if obj.ID != id || obj.Object != "file" || obj.Bytes != int64(len(content)) || obj.Filename != "in.jsonl" || obj.Purpose != schema.PurposeBatch ||
			obj.Status != "processed" || obj.ExpiresAt-obj.CreatedAt != int64(filesTTL/time.Second) {
			t.Errorf("PutFile: %+v", obj)
		}
		if got, err := f.store.File(ctx, id); err != nil || got != obj {
			t.Errorf("File: %+v, %v; want %+v", got, err, obj)
		}
		r, err := f.store.OpenFile(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(r)
		r.Close()
		if err != nil || string(data) != content {
			t.Errorf("OpenFile: %q, %v; want %q", data, err, content)
		}
		ids = append([]string{id}, ids...)
	}
	// Internal objects (a batch's plan) are neither listed nor served.
	if _, err := f.store.files.PutBytes(ctx, "batch_x.plan", []byte("{}")); err != nil {
		t.Fatal(err)
	}
	list, err := f.store.Files(ctx)
	var listed []string
	for _, o := range list {
		listed = append(listed, o.ID)
	}
	// Newest first, to the second; files of one second by id, last first.
	newestFirst := slices.IsSortedFunc(list, func(a, b schema.FileObject) int {
		if a.CreatedAt != b.CreatedAt {
			return int(b.CreatedAt - a.CreatedAt)
		}
		return strings.Compare(b.ID, a.ID)
	})
	if err != nil || !newestFirst || !slices.Equal(slices.Sorted(slices.Values(listed)), slices.Sorted(slices.Values(ids))) {
		t.Errorf("Files: %q, %v; want %q, newest first", listed, err, ids)
	}
	if err := f.store.DeleteFile(ctx, ids[0]); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{ids[0], NewFileID(), "batch_x.plan", "file-../x"} {
		if _, err := f.store.File(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("File(%q): %v; want ErrNotFound", id, err)
		}
		if _, err := f.store.OpenFile(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("OpenFile(%q): %v; want ErrNotFound", id, err)
		}
		if err := f.store.DeleteFile(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("DeleteFile(%q): %v; want ErrNotFound", id, err)
		}
	}
}
