package batch

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

// countingWriter counts what is written to it, keeping the longest line.
type countingWriter struct {
	n, longest, cur int
	buf             bytes.Buffer
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	for _, b := range p {
		if b == '\n' {
			w.longest, w.cur = max(w.longest, w.cur), 0
			continue
		}
		w.cur++
	}
	if w.buf.Len() < 1<<20 {
		w.buf.Write(p)
	}
	return len(p), nil
}

// A hostile input file (huge custom_ids, methods, urls and model names,
// invalid UTF-8, which decodes to three bytes a byte, control characters,
// which JSON escapes to six) gives a plan bounded by its line count: each
// stored entry under maxPlanEntryBytes, the plan held in memory under
// MaxCustomIDBytes plus a model name per valid line, no refusal message
// over maxRefusalBytes, and no custom_id over MaxCustomIDBytes echoed.
// Without the custom_id limit and the clipped messages, the plan of this
// 12 MiB file is about three times its size.
func TestPlanBoundedByLineCount(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	core, err := admission.Open(ctx, admission.Config{}, f.q.JS, f.catalog, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	const big = 100 << 10
	ff := strings.Repeat("\xff", big)      // invalid UTF-8: U+FFFD each, 3 bytes
	ctl := strings.Repeat(`\u0001`, big)   // a control character, escaped in JSON: 6 bytes each
	ctlID := strings.Repeat(`\u0001`, 500) // a custom_id within the limit, 3000 bytes in JSON
	line := func(customID, method, url, model string) string {
		return fmt.Sprintf(`{"custom_id":"%s","method":"%s","url":"%s","body":{"model":"%s","messages":[{"role":"user","content":"hi"}]}}`,
			customID, method, url, model)
	}
	var lines []string
	for i := range 20 {
		n := fmt.Sprint(i)
		lines = append(lines,
			line(ff+n, "POST", "/v1/chat/completions", testModel),                                   // custom_id too long
			line(ctl+n, "POST", "/v1/chat/completions", testModel),                                  // custom_id too long
			line("m"+n, ff, "/v1/chat/completions", testModel),                                      // method
			line("u"+n, "POST", ff, testModel),                                                      // url
			line("x"+n, "POST", "/v1/chat/completions", ff),                                         // model echoed
			`{"custom_id":"`+ff+n+`","method":`,                                                     // not JSON, custom_id too long
			`{"custom_id":"j`+n+`","method":"POST","body":`+ff+`}`,                                  // not JSON
			line(strings.Replace(ctlID, `\u0001`, n, 1), "POST", "/v1/chat/completions", testModel), // valid
			line(strings.Replace(ctlID, `\u0001`, n, 1), "POST", "/v1/chat/completions", testModel), // duplicate
		)
	}
	data := strings.Join(lines, "\n") + "\n"
	var w countingWriter
	plan, err := Validator{Core: core}.Plan(ctx, "batch_test", keys.Caller{}, strings.NewReader(data), &w)
	if err != nil {
		t.Fatal(err)
	}
	if plan.Total != len(lines) || len(plan.Valid) != 20 || plan.Refused != len(lines)-20 {
		t.Errorf("plan of %d lines: %d total, %d valid, %d refused; want %d, 20, %d", len(lines), plan.Total, len(plan.Valid), plan.Refused, len(lines), len(lines)-20)
	}
	if w.longest > maxPlanEntryBytes {
		t.Errorf("a stored plan entry is %d bytes; want at most %d (maxPlanEntryBytes)", w.longest, maxPlanEntryBytes)
	}
	if bound := (len(lines) + 1) * maxPlanEntryBytes; w.n > bound {
		t.Errorf("the stored plan of %d lines (%d bytes of input) is %d bytes; want at most %d", len(lines), len(data), w.n, bound)
	}
	held := 0
	for _, l := range plan.Valid {
		held += len(l.CustomID)
		if len(l.CustomID) > MaxCustomIDBytes {
			t.Errorf("line %d kept a custom_id of %d bytes", l.Line, len(l.CustomID))
		}
	}
	if held > len(plan.Valid)*MaxCustomIDBytes {
		t.Errorf("the plan holds %d bytes of custom_ids for %d lines", held, len(plan.Valid))
	}
	// Every refusal is bounded, and says why.
	sc := bufio.NewScanner(&w.buf)
	sc.Buffer(nil, 64<<20)
	codes := map[string]int{}
	for sc.Scan() {
		var e planEntry
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil {
			t.Fatalf("plan entry %.60q: %v", sc.Bytes(), err)
		}
		if e.Refused == nil {
			continue
		}
		codes[e.Refused.Error.Code]++
		if n := len(e.Refused.Error.Message); n > maxRefusalBytes {
			t.Errorf("a refusal message is %d bytes (%.60q); want at most %d", n, e.Refused.Error.Message, maxRefusalBytes)
		}
		if e.Refused.CustomID != nil && len(*e.Refused.CustomID) > MaxCustomIDBytes {
			t.Errorf("a refusal carries a custom_id of %d bytes", len(*e.Refused.CustomID))
		}
		if strings.Contains(e.Refused.Error.Message, "custom_id is") && !strings.Contains(e.Refused.Error.Message, fmt.Sprintf("at most %d bytes", MaxCustomIDBytes)) {
			t.Errorf("a long custom_id's refusal does not give the limit: %q", e.Refused.Error.Message)
		}
	}
	want := map[string]int{schema.CodeInvalidBatchLine: 20 * 4, schema.CodeModelNotFound: 20, schema.CodeInvalidJSON: 40, schema.CodeDuplicateCustom: 20}
	if fmt.Sprint(codes) != fmt.Sprint(want) {
		t.Errorf("refusals by code %v; want %v", codes, want)
	}
	t.Logf("input %d bytes, %d lines; stored plan %d bytes, longest entry %d bytes", len(data), len(lines), w.n, w.longest)
}

// Asking the input reader for the same line again (the queue refused it
// for now, and progress offers it again after a pause) reads nothing: the
// same reader, no chunk fetched, not the file again from its start.
func TestInputReaderRetryReadsNothing(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	var lines []string
	for i := range 6 {
		lines = append(lines, fmt.Sprintf(`{"n":%d,"pad":%q}`, i, strings.Repeat("p", 200<<10))) // over a chunk each
	}
	file, err := f.store.PutFile(ctx, NewFileID(), "", "input.jsonl", schema.PurposeBatch, len(lines), strings.NewReader(strings.Join(lines, "\n")+"\n"))
	if err != nil {
		t.Fatal(err)
	}
	in := &inputReader{store: f.store, fileID: file.ID, max: 1 << 20}
	defer in.close()
	for _, n := range []int{2, 4} {
		got, err := in.line(ctx, n)
		if err != nil || string(got) != lines[n] {
			t.Fatalf("line %d: %.30q, %v", n, got, err)
		}
		obj := in.obj.(*chunkReader)
		fetched := obj.fetched
		for range 50 {
			got, err := in.line(ctx, n)
			if err != nil || string(got) != lines[n] {
				t.Fatalf("line %d again: %.30q, %v", n, got, err)
			}
		}
		if in.obj != obj || obj.fetched != fetched {
			t.Errorf("asking for line %d 50 more times opened the file again or fetched %d chunks; want neither", n, obj.fetched-fetched)
		}
	}
	got, err := in.line(ctx, 5)
	if err != nil || string(got) != lines[5] {
		t.Fatalf("line 5 after the retries: %.30q, %v", got, err)
	}
}

// The input file deleted while lines are left to queue: the lines not
// queued yet are answered file_not_found, the line queued before keeps
// its answer, and the batch completes (not retried until it expires).
func TestRunnerInputFileDeleted(t *testing.T) {
	f := newFixture(t)
	recs := f.watchRecords(t)
	pub := f.watchPublished(t)
	pad := strings.Repeat("p", 200<<10) // a line over a chunk: line 1 is not read with line 0
	var lines []string
	for i := range 3 {
		lines = append(lines, fmt.Sprintf(`{"custom_id":"d%d","method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":%q}]}}`, i, testModel, pad))
	}
	b := f.newBatch(t, lines...)
	f.runner(t, RunnerConfig{Owner: "A", Window: 1, LeaseTTL: time.Minute, ScanInterval: 20 * time.Millisecond, SaveInterval: 20 * time.Millisecond})
	waitFor(t, "line 0 to be queued", func() bool { return pub.count(JobID(b.ID, 0)) == 1 })
	if err := f.store.DeleteFile(testCtx(t), b.InputFileID); err != nil {
		t.Fatal(err)
	}
	f.answer(t, b.ID, 0)
	waitFor(t, "the batch to complete", func() bool { return slices.Contains(recs.changes(b.ID, status), schema.BatchCompleted) })
	rec, _, err := f.store.Batch(testCtx(t), b.ID)
	if err != nil {
		t.Fatal(err)
	}
	if c := rec.Batch.RequestCounts; c != (schema.BatchRequestCounts{Total: 3, Completed: 1, Failed: 2}) {
		t.Errorf("counts %+v; want 3 total, 1 completed, 2 failed", c)
	}
	if out := readOutput(t, f, rec.Batch.OutputFileID); len(out) != 1 || *out[0].CustomID != "d0" {
		t.Errorf("output file %s; want d0's answer", jsonString(t, out))
	}
	var got []string
	for _, l := range readOutput(t, f, rec.Batch.ErrorFileID) {
		if l.Error == nil || l.Error.Code != CodeInputFileDeleted || !strings.Contains(l.Error.Message, "input file was deleted") {
			t.Errorf("error line %s; want %s", jsonString(t, l), CodeInputFileDeleted)
		}
		got = append(got, *l.CustomID)
	}
	if slices.Sort(got); !slices.Equal(got, []string{"d1", "d2"}) {
		t.Errorf("error lines for %q; want d1 and d2", got)
	}
	for _, n := range []int{1, 2} {
		if c := pub.count(JobID(b.ID, n)); c != 0 {
			t.Errorf("line %d was queued %d times; want never (its input was gone)", n, c)
		}
	}
}

// Of the batches waiting, a runner takes first those of a creator with
// nothing running on it: one caller's twenty batches, created first, do
// not take both of a runner's slots while another caller's batch waits.
func TestRunnerPrefersIdleCreators(t *testing.T) {
	f := newFixture(t)
	revs := f.watchAllRecords(t)
	var xs []schema.Batch
	for i := range 20 {
		xs = append(xs, f.newBatchBy(t, "tok-x", inputLine(fmt.Sprint("x", i))))
		time.Sleep(2 * time.Millisecond) // batch ids sort by the millisecond
	}
	y := f.newBatchBy(t, "tok-y", inputLine("y0"))
	f.runner(t, RunnerConfig{Owner: "A", MaxActive: 2, LeaseTTL: time.Minute, ScanInterval: 20 * time.Millisecond, SaveInterval: 20 * time.Millisecond})
	taken := func() []string {
		var ids []string
		for _, r := range revs() {
			if r.owner == "A" && !slices.Contains(ids, r.id) {
				ids = append(ids, r.id)
			}
		}
		slices.Sort(ids)
		return ids
	}
	waitFor(t, "the runner to take two batches", func() bool { return len(taken()) >= 2 })
	// Nothing answers: both stay running while the runner scans on.
	waitFor(t, "the runner to renew its leases a few times", func() bool {
		n := 0
		for _, r := range revs() {
			if r.owner == "A" {
				n++
			}
		}
		return n >= 8
	})
	if got, want := taken(), []string{xs[0].ID, y.ID}; !slices.Equal(got, want) {
		t.Errorf("the runner took %q; want the oldest of tok-x's and tok-y's %q", got, want)
	}
}

// A plan stored before plans were streamed (one JSON object) is read as
// it was: its lines to run, its counts, its refused lines' errors.
func TestLoadLegacyPlan(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	const id = "batch_legacy0000000000000000000000"
	cid := "bad"
	old := map[string]any{
		"valid":  []PlanLine{{Line: 0, CustomID: "a", Model: testModel}, {Line: 2, CustomID: "c", Model: testModel}},
		"errors": []schema.BatchOutputLine{{ID: requestLineID(id, 1), CustomID: &cid, Error: &schema.BatchLineError{Code: "invalid_batch_line", Message: "Line 2: no"}}},
		"total":  3,
	}
	data, err := json.Marshal(old)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.files.PutBytes(ctx, planName(id), data); err != nil {
		t.Fatal(err)
	}
	p, err := f.store.loadPlan(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if p.Total != 3 || p.Refused != 1 || jsonString(t, p.Valid) != jsonString(t, old["valid"]) {
		t.Errorf("legacy plan read as %+v", p)
	}
	var refused []schema.BatchOutputLine
	if err := f.store.eachRefused(ctx, id, func(l schema.BatchOutputLine) error { refused = append(refused, l); return nil }); err != nil {
		t.Fatal(err)
	}
	if jsonString(t, refused) != jsonString(t, old["errors"]) {
		t.Errorf("legacy refused lines %s", jsonString(t, refused))
	}
}

// The object reader opens a file's object or a batch's plan, nothing
// else of the files bucket.
func TestOpenObjectNames(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	for _, name := range []string{"other", "batch_x.plan.x", "../file-x", "file-x.plan"} {
		if _, err := f.store.files.PutBytes(ctx, name, []byte("{}\n")); err != nil {
			t.Fatal(err)
		}
		if r, err := f.store.openObject(ctx, name); !errors.Is(err, ErrNotFound) {
			if r != nil {
				_ = r.Close()
			}
			t.Errorf("openObject(%q): %v; want ErrNotFound", name, err)
		}
	}
}

// Unfinished counts one creator's batches not done, from that creator's
// markers: another creator's batches are never read (one of them that is
// not a batch record at all changes nothing), a done batch is not
// counted, and deactivate removes its marker.
func TestUnfinishedReadsOnlyTheCreators(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	var xs []schema.Batch
	for i := range 3 {
		xs = append(xs, f.newBatchBy(t, "tok-x", inputLine(fmt.Sprint("x", i))))
	}
	y := f.newBatchBy(t, "tok-y", inputLine("y0"))
	if _, err := f.store.batches.Put(ctx, recordKey(y.ID), []byte("not a record")); err != nil {
		t.Fatal(err)
	}
	count := func(who string) int {
		t.Helper()
		n, err := f.store.Unfinished(ctx, who)
		if err != nil {
			t.Fatalf("Unfinished(%s): %v", who, err)
		}
		return n
	}
	if got := count("tok-x"); got != 3 {
		t.Errorf("tok-x has %d unfinished; want 3", got)
	}
	if got := count("tok-y"); got != 0 {
		t.Errorf("tok-y, whose one record is unreadable, has %d unfinished; want 0", got)
	}
	if _, err := f.store.Update(ctx, xs[0].ID, func(r *Record) error { r.Batch.Status = schema.BatchCompleted; return nil }); err != nil {
		t.Fatal(err)
	}
	if got := count("tok-x"); got != 2 {
		t.Errorf("tok-x with one batch done has %d unfinished; want 2", got)
	}
	if err := f.store.deactivate(ctx, xs[1].ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.store.batches.Get(ctx, ownerKey("tok-x", xs[1].ID)); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("the owner marker of a deactivated batch: %v; want it gone", err)
	}
	if got := count("tok-x"); got != 1 {
		t.Errorf("tok-x after a batch is deactivated has %d unfinished; want 1", got)
	}
}
