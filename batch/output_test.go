package batch

import (
	"errors"
	"io"
	"testing"

	"github.com/laas-bridge/laas-bridge/schema"
)

// A result file is stored whole or not at all: a writer that fails, or
// writes another number of lines than was counted (the answers changed
// between finalization's passes), leaves no part of it and keeps what an
// earlier attempt stored; a retried finalization stores the same file
// again under the same id.
func TestResultFileAllOrNothing(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	d := &driver{r: &Runner{store: f.store}, id: "batch_allornothing"}
	line := func(cid string) schema.BatchOutputLine {
		return schema.BatchOutputLine{ID: "batch_req_" + cid, CustomID: &cid, Error: &schema.BatchLineError{Code: "x", Message: "y"}}
	}
	writeN := func(n int, fail error) func(*lineWriter) error {
		return func(w *lineWriter) error {
			for i := range n {
				if err := w.write(line(string(rune('a' + i)))); err != nil {
					return err
				}
			}
			return fail
		}
	}
	content := func(id string) string {
		t.Helper()
		r, err := f.store.OpenFile(ctx, id)
		if err != nil {
			t.Fatalf("open %s: %v", id, err)
		}
		defer r.Close()
		data, err := io.ReadAll(r)
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}

	if _, err := d.putResultFile(ctx, "error", 3, writeN(2, nil)); err == nil {
		t.Fatal("2 lines written of 3 counted were stored")
	}
	if _, err := f.store.File(ctx, "file-allornothing-error"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after a short write the file is there: %v", err)
	}
	id, err := d.putResultFile(ctx, "error", 2, writeN(2, nil))
	if err != nil || id == nil || *id != "file-allornothing-error" {
		t.Fatalf("store: %v, %v", id, err)
	}
	first := content(*id)
	if _, err := d.putResultFile(ctx, "error", 3, writeN(3, errors.New("watch failed"))); err == nil {
		t.Fatal("a failed write was stored")
	}
	if got := content(*id); got != first {
		t.Errorf("a failed retry changed the stored file:\n%s\nwant\n%s", got, first)
	}
	if _, err := d.putResultFile(ctx, "error", 2, writeN(2, nil)); err != nil {
		t.Fatal(err)
	}
	if got := content(*id); got != first {
		t.Errorf("a retried finalization stored\n%s\nwant the same file\n%s", got, first)
	}
}
