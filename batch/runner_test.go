package batch

import (
	"bufio"
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

var fullRun = []string{schema.BatchValidating, schema.BatchInProgress, schema.BatchFinalizing, schema.BatchCompleted}

// One runner drives a batch at a time: a second one leaves it alone while
// the first renews its lease, takes it over once the lease has lapsed, and
// does not queue again the lines already answered.
func TestRunnerLeaseTakeover(t *testing.T) {
	f := newFixture(t)
	recs := f.watchRecords(t)
	pub := f.watchPublished(t)
	const ttl = 2 * time.Second
	// A never saves how far it queued (SaveInterval): once it stops, the
	// record says no line was queued, so B goes through the lines from
	// the first.
	stopA := f.runner(t, RunnerConfig{Owner: "A", LeaseTTL: ttl, ScanInterval: 20 * time.Millisecond, SaveInterval: time.Hour})
	b := f.newBatch(t, inputLine("c0"), inputLine("c1"), inputLine("c2"), inputLine("c3"))
	waitFor(t, "A to queue the 4 lines", func() bool {
		for line := range 4 {
			if pub.count(JobID(b.ID, line)) == 0 {
				return false
			}
		}
		return true
	})
	f.runner(t, RunnerConfig{Owner: "B", LeaseTTL: ttl, ScanInterval: 20 * time.Millisecond, SaveInterval: 20 * time.Millisecond})
	f.answer(t, b.ID, 0)
	f.answer(t, b.ID, 1)
	// A renews every third of the TTL; B, scanning all along, must leave
	// the batch alone.
	seen := len(recs.of(b.ID))
	waitFor(t, "A to renew its lease twice while B runs", func() bool {
		renewals := 0
		for _, r := range recs.of(b.ID)[seen:] {
			if r.Owner == "A" {
				renewals++
			}
		}
		return renewals >= 2
	})
	stopA()

	waitFor(t, "B to take the batch over", func() bool { return slices.Contains(recs.changes(b.ID, owner), "B") })
	waitFor(t, "B to queue lines 2 and 3 again", func() bool {
		return pub.count(JobID(b.ID, 2)) == 2 && pub.count(JobID(b.ID, 3)) == 2
	})
	f.answer(t, b.ID, 2)
	f.answer(t, b.ID, 3)
	waitFor(t, "the batch to complete", func() bool { return slices.Contains(recs.changes(b.ID, status), schema.BatchCompleted) })

	if got := recs.changes(b.ID, owner); !slices.Equal(got, []string{"", "A", "B"}) {
		t.Errorf("owners in order: %q; want A, then B only", got)
	}
	if got := recs.changes(b.ID, status); !slices.Equal(got, fullRun) {
		t.Errorf("statuses in order: %q; want %q", got, fullRun)
	}
	revs := recs.of(b.ID)
	first := slices.IndexFunc(revs, func(r Record) bool { return r.Owner == "B" })
	lastA := revs[first-1]
	if lastA.Published != 0 {
		t.Fatalf("A's last record says %d lines queued; the test needs 0", lastA.Published)
	}
	// B took it at or after the end of A's lease: its own lease ends a TTL
	// later at least.
	if takenB := revs[first].LeaseUntil; takenB.Before(lastA.LeaseUntil.Add(ttl)) {
		t.Errorf("B's lease ends %s, A's ended %s: B took the batch %s before A's lease lapsed",
			takenB.Format(time.RFC3339Nano), lastA.LeaseUntil.Format(time.RFC3339Nano), lastA.LeaseUntil.Add(ttl).Sub(takenB))
	}
	for line, want := range []int{1, 1, 2, 2} {
		if got := pub.count(JobID(b.ID, line)); got != want {
			t.Errorf("line %d queued %d times; want %d (answered lines are never queued again)", line, got, want)
		}
	}
	checkCompleted(t, f, b.ID, "c0", "c1", "c2", "c3")
}

// Runners that start together share the batches: each batch is driven by
// one of them from start to end, and each line is queued once.
func TestRunnersTakeEachBatchOnce(t *testing.T) {
	f := newFixture(t)
	recs := f.watchRecords(t)
	pub := f.watchPublished(t)
	f.worker(t)
	for _, name := range []string{"A", "B"} {
		// A lease far longer than the test: no batch changes hands.
		f.runner(t, RunnerConfig{Owner: name, LeaseTTL: time.Minute, ScanInterval: 20 * time.Millisecond, SaveInterval: 20 * time.Millisecond})
	}
	var batches []schema.Batch
	for range 4 {
		batches = append(batches, f.newBatch(t, inputLine("x"), inputLine("y"), inputLine("z")))
	}
	for _, b := range batches {
		waitFor(t, "batch "+b.ID+" to complete", func() bool { return slices.Contains(recs.changes(b.ID, status), schema.BatchCompleted) })
		if owners := recs.changes(b.ID, owner); len(owners) != 2 || owners[0] != "" || (owners[1] != "A" && owners[1] != "B") {
			t.Errorf("batch %s: owners in order %q; want one of A and B", b.ID, owners)
		}
		if got := recs.changes(b.ID, status); !slices.Equal(got, fullRun) {
			t.Errorf("batch %s: statuses in order %q; want %q", b.ID, got, fullRun)
		}
		for line := range 3 {
			if n := pub.count(JobID(b.ID, line)); n != 1 {
				t.Errorf("batch %s: line %d queued %d times; want 1", b.ID, line, n)
			}
		}
		checkCompleted(t, f, b.ID, "x", "y", "z")
	}
}

// A batch cancelled while it runs ends cancelled: the lines not answered
// get a batch_cancelled answer (so a worker skips them), their jobs are
// cancelled, and the files hold what was answered and what was not run.
func TestRunnerCancel(t *testing.T) {
	f := newFixture(t)
	recs := f.watchRecords(t)
	pub := f.watchPublished(t)
	var mu sync.Mutex
	var cancels, payloads []string
	sub, err := f.q.Conn.Subscribe(schema.SubjectCancel+".>", func(m *nats.Msg) {
		mu.Lock()
		cancels = append(cancels, strings.TrimPrefix(m.Subject, schema.SubjectCancel+"."))
		payloads = append(payloads, string(m.Data))
		mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	f.runner(t, RunnerConfig{Owner: "A", LeaseTTL: time.Minute, ScanInterval: 20 * time.Millisecond, SaveInterval: 20 * time.Millisecond})
	b := f.newBatch(t, inputLine("c0"), inputLine("c1"), inputLine("c2"))
	waitFor(t, "the 3 lines to be queued", func() bool { return pub.count(JobID(b.ID, 2)) == 1 })
	f.answer(t, b.ID, 0)
	waitFor(t, "the answer to be counted", func() bool {
		revs := recs.of(b.ID)
		return len(revs) > 0 && revs[len(revs)-1].Batch.RequestCounts.Completed == 1
	})
	ctx := testCtx(t)
	rec, err := f.store.Cancel(ctx, keys.Caller{}, b.ID, time.Now())
	if err != nil || rec.Batch.Status != schema.BatchCancelling || rec.Batch.CancellingAt == nil {
		t.Fatalf("Cancel: %+v, %v; want cancelling", rec, err)
	}
	waitFor(t, "the batch to be cancelled", func() bool { return slices.Contains(recs.changes(b.ID, status), schema.BatchCancelled) })
	want := []string{schema.BatchValidating, schema.BatchInProgress, schema.BatchCancelling, schema.BatchCancelled}
	if got := recs.changes(b.ID, status); !slices.Equal(got, want) {
		t.Errorf("statuses in order %q; want %q", got, want)
	}
	for line := 1; line <= 2; line++ {
		e, err := f.answers.Get(ctx, AnswerKey(b.ID, line))
		if err != nil {
			t.Fatalf("answer of line %d: %v", line, err)
		}
		var rep schema.Reply
		if err := json.Unmarshal(e.Value(), &rep); err != nil || rep.Error == nil || rep.Error.Code == nil || *rep.Error.Code != schema.CodeBatchCancelled {
			t.Errorf("answer of line %d: %s; want %s", line, e.Value(), schema.CodeBatchCancelled)
		}
	}
	mu.Lock()
	got := slices.Sorted(slices.Values(cancels))
	mu.Unlock()
	if want := []string{JobID(b.ID, 1), JobID(b.ID, 2)}; !slices.Equal(got, want) {
		t.Errorf("jobs cancelled: %q; want %q", got, want)
	}
	// Each cancel names the batch's expiry, every line's latest deadline,
	// so workers forget the ids then.
	mu.Lock()
	defer mu.Unlock()
	for _, p := range payloads {
		if dl, ok := schema.CancelDeadline([]byte(p)); !ok || dl.Unix() != *rec.Batch.ExpiresAt {
			t.Errorf("cancel payload %q; want the batch's expiry %d", p, *rec.Batch.ExpiresAt)
		}
	}
	final, _, err := f.store.Batch(ctx, b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c := final.Batch.RequestCounts; c != (schema.BatchRequestCounts{Total: 3, Completed: 1, Failed: 0}) || final.Batch.CancelledAt == nil {
		t.Errorf("cancelled batch: counts %+v, cancelled_at %v; want 3 total, 1 completed, none failed", c, final.Batch.CancelledAt)
	}
	if out := readOutput(t, f, final.Batch.OutputFileID); len(out) != 1 || *out[0].CustomID != "c0" || out[0].Response.StatusCode != 200 {
		t.Errorf("output file: %+v; want the answer to c0", out)
	}
	errs := readOutput(t, f, final.Batch.ErrorFileID)
	if len(errs) != 2 {
		t.Fatalf("error file: %d lines; want 2", len(errs))
	}
	for _, l := range errs {
		if l.Error == nil || l.Error.Code != schema.CodeBatchCancelled || l.Response != nil {
			t.Errorf("error file line %+v; want %s", l, schema.CodeBatchCancelled)
		}
	}
}

// checkCompleted checks a completed batch's record and its output file:
// every line answered with 200, in customIDs, and no error file.
func checkCompleted(t *testing.T, f *fixture, id string, customIDs ...string) {
	t.Helper()
	rec, _, err := f.store.Batch(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	n := len(customIDs)
	if c := rec.Batch.RequestCounts; c != (schema.BatchRequestCounts{Total: n, Completed: n}) || rec.Batch.ErrorFileID != nil || rec.Batch.CompletedAt == nil {
		t.Errorf("batch %s: counts %+v, error file %v, completed_at %v; want %d completed, no error file", id, c, rec.Batch.ErrorFileID, rec.Batch.CompletedAt, n)
	}
	var got []string
	for _, l := range readOutput(t, f, rec.Batch.OutputFileID) {
		if l.Response == nil || l.Response.StatusCode != 200 || !strings.Contains(string(l.Response.Body), "answer to "+l.Response.RequestID) {
			t.Errorf("batch %s: output line %+v; want a 200 with its answer", id, l)
		}
		got = append(got, *l.CustomID)
	}
	slices.Sort(got)
	if !slices.Equal(got, customIDs) {
		t.Errorf("batch %s: output lines for %q; want %q", id, got, customIDs)
	}
}

// readOutput reads an output or error file.
func readOutput(t *testing.T, f *fixture, id *string) []schema.BatchOutputLine {
	t.Helper()
	if id == nil {
		t.Fatal("no file")
	}
	data, err := f.store.readAll(testCtx(t), *id)
	if err != nil {
		t.Fatal(err)
	}
	var out []schema.BatchOutputLine
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var l schema.BatchOutputLine
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("file %s: %v", *id, err)
		}
		out = append(out, l)
	}
	return out
}
