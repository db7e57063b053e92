package batch

import (
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// revision is one write of a batch record, in the order the bucket keeps
// them across every batch.
type revision struct {
	id, owner, status string
}

// watchAllRecords collects every revision of every batch record, in the
// bucket's order.
func (f *fixture) watchAllRecords(t *testing.T) func() []revision {
	t.Helper()
	rs := f.watchRecords(t)
	return func() []revision {
		var revs []revision
		for _, r := range rs.all() {
			revs = append(revs, revision{r.Batch.ID, r.Owner, r.Batch.Status})
		}
		return revs
	}
}

// A runner with MaxActive 1 drives one batch at a time: of two batches
// waiting when it starts, it takes the second only once the first is
// done. Counted over the records as written: from the revision that
// gives a batch to the runner to the one that ends it, no other batch is
// the runner's.
func TestRunnerMaxActive(t *testing.T) {
	f := newFixture(t)
	revs := f.watchAllRecords(t)
	pub := f.watchPublished(t)
	b1 := f.newBatch(t, inputLine("a0"), inputLine("a1"))
	b2 := f.newBatch(t, inputLine("b0"), inputLine("b1"))
	f.runner(t, RunnerConfig{Owner: "A", MaxActive: 1, LeaseTTL: time.Minute, ScanInterval: 20 * time.Millisecond, SaveInterval: 20 * time.Millisecond})
	// Nothing answers yet: the first batch taken stays in progress while
	// the runner scans on; a runner without the cap takes the other too.
	var first schema.Batch
	waitFor(t, "the runner to queue the lines of one batch", func() bool {
		for _, b := range []schema.Batch{b1, b2} {
			if pub.count(JobID(b.ID, 1)) == 1 {
				first = b
				return true
			}
		}
		return false
	})
	waitFor(t, "the runner to renew its lease on "+first.ID+" (it scanned many times meanwhile)", func() bool {
		n := 0
		for _, r := range revs() {
			if r.id == first.ID && r.owner == "A" && r.status == schema.BatchInProgress {
				n++
			}
		}
		return n >= 3
	})
	for _, r := range revs() {
		if r.id != first.ID && r.owner == "A" {
			t.Fatalf("the runner took batch %s while it drove %s; want one at a time (MaxActive 1)", r.id, first.ID)
		}
	}
	// The first batch's lines were queued before the worker listened.
	f.worker(t)
	f.answer(t, first.ID, 0)
	f.answer(t, first.ID, 1)
	for _, b := range []schema.Batch{b1, b2} {
		waitFor(t, "batch "+b.ID+" to complete", func() bool {
			return slices.ContainsFunc(revs(), func(r revision) bool { return r.id == b.ID && r.status == schema.BatchCompleted })
		})
	}
	driving, most := map[string]bool{}, 0
	var order []string
	for _, r := range revs() {
		switch {
		case schema.BatchDone(r.status):
			delete(driving, r.id)
		case r.owner == "A" && !driving[r.id]:
			driving[r.id] = true
			order = append(order, r.id)
		}
		most = max(most, len(driving))
	}
	if most != 1 {
		t.Errorf("the runner drove %d batches at once; want 1 (MaxActive)", most)
	}
	if len(order) != 2 || order[0] != first.ID {
		t.Errorf("batches taken in order %q; want %s first, then the other", order, first.ID)
	}
	checkCompleted(t, f, b1.ID, "a0", "a1")
	checkCompleted(t, f, b2.ID, "b0", "b1")
}

// A line longer than the body limit (MaxBodyBytes plus LineOverhead) is
// refused as that line's error, request_too_large, without being run; the
// lines around it run.
func TestRunnerRefusesLineOverBodyLimit(t *testing.T) {
	f := newFixture(t)
	recs := f.watchRecords(t)
	pub := f.watchPublished(t)
	f.worker(t)
	const limit = 1 << 10
	long := fmt.Sprintf(`{"custom_id":"long","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":%q}]}}`,
		testModel, strings.Repeat("x", limit+LineOverhead))
	f.runner(t, RunnerConfig{Owner: "A", MaxBodyBytes: limit, LeaseTTL: time.Minute, ScanInterval: 20 * time.Millisecond, SaveInterval: 20 * time.Millisecond})
	b := f.newBatch(t, inputLine("c0"), long, inputLine("c2"))
	waitFor(t, "the batch to complete", func() bool { return slices.Contains(recs.changes(b.ID, status), schema.BatchCompleted) })
	rec, _, err := f.store.Batch(testCtx(t), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c := rec.Batch.RequestCounts; c != (schema.BatchRequestCounts{Total: 3, Completed: 2, Failed: 1}) {
		t.Errorf("counts %+v; want 3 total, 2 completed, 1 failed", c)
	}
	var got []string
	for _, l := range readOutput(t, f, rec.Batch.OutputFileID) {
		got = append(got, *l.CustomID)
	}
	if slices.Sort(got); !slices.Equal(got, []string{"c0", "c2"}) {
		t.Errorf("output lines for %q; want c0 and c2", got)
	}
	errs := readOutput(t, f, rec.Batch.ErrorFileID)
	if len(errs) != 1 || errs[0].Error == nil || errs[0].Error.Code != schema.CodeRequestTooLarge ||
		!strings.Contains(errs[0].Error.Message, "Line 2: the line is longer than") || errs[0].ID != requestLineID(b.ID, 1) {
		t.Errorf("error file %+v; want line 2 refused as %s", errs, schema.CodeRequestTooLarge)
	}
	if n := pub.count(JobID(b.ID, 1)); n != 0 {
		t.Errorf("the long line was queued %d times; want never", n)
	}
}

// A runner with a lower BRIDGE_MAX_BODY_BYTES than the one that made a
// batch's plan, taking the batch over, reads the plan's lines with the
// plan's limit: the long line the plan took is queued and answered, not
// tried again until the batch expires. A plan stored before plans kept
// their limit gets the line refused, as that line's answer
// (request_too_large), and the batch completes all the same.
func TestRunnerReadsWithThePlansLineLimit(t *testing.T) {
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			f := newFixture(t)
			recs := f.watchRecords(t)
			pub := f.watchPublished(t)
			const small = 1 << 10
			long := fmt.Sprintf(`{"custom_id":"long","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":%q}]}}`,
				testModel, strings.Repeat("x", small+LineOverhead)) // over the small runner's line limit, within the default's
			b := f.newBatch(t, inputLine("c0"), long, inputLine("c2"))
			// Runner A, with the default limit, plans the batch and queues
			// line 0, then stops; nothing answers while it runs.
			stopA := f.runner(t, RunnerConfig{Owner: "A", Window: 1, LeaseTTL: time.Second, ScanInterval: 20 * time.Millisecond, SaveInterval: 20 * time.Millisecond})
			waitFor(t, "runner A to queue line 0", func() bool { return pub.count(JobID(b.ID, 0)) == 1 })
			stopA()
			if legacy {
				ctx := testCtx(t)
				data, err := f.store.files.GetBytes(ctx, planName(b.ID))
				if err != nil {
					t.Fatal(err)
				}
				old := regexp.MustCompile(`,"max_line":\d+`).ReplaceAll(data, nil)
				if len(old) == len(data) {
					t.Fatalf("the stored plan keeps no max_line: %s", data)
				}
				if _, err := f.store.files.PutBytes(ctx, planName(b.ID), old); err != nil {
					t.Fatal(err)
				}
			}
			f.answer(t, b.ID, 0)
			f.worker(t)
			// Runner B, with the small limit, takes the batch once A's lease lapses.
			f.runner(t, RunnerConfig{Owner: "B", MaxBodyBytes: small, Window: 1, LeaseTTL: time.Second, ScanInterval: 20 * time.Millisecond, SaveInterval: 20 * time.Millisecond})
			waitFor(t, "the batch to complete", func() bool { return slices.Contains(recs.changes(b.ID, status), schema.BatchCompleted) })
			rec, _, err := f.store.Batch(testCtx(t), b.ID)
			if err != nil {
				t.Fatal(err)
			}
			want := schema.BatchRequestCounts{Total: 3, Completed: 3}
			if legacy {
				want = schema.BatchRequestCounts{Total: 3, Completed: 2, Failed: 1}
			}
			if c := rec.Batch.RequestCounts; c != want {
				t.Errorf("counts %+v; want %+v", c, want)
			}
			if !legacy {
				if n := pub.count(JobID(b.ID, 1)); n != 1 {
					t.Errorf("the long line was queued %d times; want once", n)
				}
				return
			}
			errs := readOutput(t, f, rec.Batch.ErrorFileID)
			if len(errs) != 1 || errs[0].Response == nil || errs[0].Response.StatusCode != http.StatusRequestEntityTooLarge || *errs[0].CustomID != "long" ||
				!strings.Contains(string(errs[0].Response.Body), `"code":"request_too_large"`) {
				t.Errorf("error file %s; want the long line refused as %s", jsonString(t, errs), schema.CodeRequestTooLarge)
			}
		})
	}
}
