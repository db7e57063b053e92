package batch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// testModel is the one model of the tests' catalog.
const testModel = "test-model"

// fixture is an embedded NATS server with the bridge's buckets, and the
// Batch API's store on it.
type fixture struct {
	q       *queuetest.Queue
	store   *Store
	answers jetstream.KeyValue
	catalog *schema.Catalog
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	q := queuetest.Start(t, queue.Config{Memory: true})
	ctx := testCtx(t)
	store, err := Open(ctx, q.JS)
	if err != nil {
		t.Fatal(err)
	}
	answers, err := q.JS.KeyValue(ctx, schema.BucketAnswers)
	if err != nil {
		t.Fatal(err)
	}
	catalog, err := schema.NewCatalog([]schema.Model{{Alias: testModel, LaaSModel: testModel}})
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{q: q, store: store, answers: answers, catalog: catalog}
}

// testCtx bounds one test's calls to NATS.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// inputLine is a valid batch input line.
func inputLine(customID string) string {
	return fmt.Sprintf(`{"custom_id":%q,"method":"POST","url":"/v1/chat/completions","body":{"model":%q,"messages":[{"role":"user","content":"hi"}]}}`, customID, testModel)
}

// newBatch uploads an input file of lines and creates a batch on it, as
// the admin.
func (f *fixture) newBatch(t *testing.T, lines ...string) schema.Batch {
	t.Helper()
	return f.newBatchBy(t, "", lines...)
}

// newBatchBy uploads an input file of lines and creates a batch on it, as
// the key whose token is owner.
func (f *fixture) newBatchBy(t *testing.T, owner string, lines ...string) schema.Batch {
	t.Helper()
	ctx := testCtx(t)
	data := strings.Join(lines, "\n") + "\n"
	file, err := f.store.PutFile(ctx, NewFileID(), owner, "input.jsonl", schema.PurposeBatch, CountLines([]byte(data)), strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	rec := &Record{Batch: NewBatch(file.ID, nil, time.Now()), CreatedBy: owner}
	if err := f.store.CreateBatch(ctx, rec); err != nil {
		t.Fatal(err)
	}
	return rec.Batch
}

// answer keeps a 200 answer for line of batch id, as a worker does.
func (f *fixture) answer(t *testing.T, id string, line int) {
	t.Helper()
	if err := f.keepAnswer(testCtx(t), AnswerKey(id, line), JobID(id, line)); err != nil {
		t.Fatal(err)
	}
}

// keepAnswer keeps a 200 answer to job jobID under key.
func (f *fixture) keepAnswer(ctx context.Context, key, jobID string) error {
	rep := schema.Reply{ID: jobID, Status: 200, Completion: &schema.ChatCompletion{
		ID: "chatcmpl-" + jobID, Object: "chat.completion", Model: testModel,
		Choices: []schema.Choice{{Message: schema.AssistantMessage{Role: "assistant", Content: "answer to " + jobID}, FinishReason: "stop"}},
	}}
	data, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	if _, err := f.answers.Create(ctx, key, data); err != nil {
		return fmt.Errorf("answer %s: %w", key, err)
	}
	return nil
}

// worker answers every job queued on the batch lane, as the workers do.
func (f *fixture) worker(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	sub, err := f.q.Conn.Subscribe(schema.SubjectBatch, func(m *nats.Msg) {
		var env schema.Envelope
		err := json.Unmarshal(m.Data, &env)
		if err == nil {
			if err = f.keepAnswer(ctx, env.IdempotencyKey, env.ID); errors.Is(err, jetstream.ErrKeyExists) {
				err = nil
			}
		}
		if err != nil && ctx.Err() == nil {
			t.Errorf("worker: %v", err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); _ = sub.Unsubscribe() })
}

// runner starts a runner that Run drives until stop is called.
func (f *fixture) runner(t *testing.T, cfg RunnerConfig) (stop func()) {
	t.Helper()
	core, err := admission.Open(context.Background(), admission.Config{}, f.q.JS, f.catalog, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRunner(cfg, f.q.JS, f.store, core, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("runner %s: %v", cfg.Owner, err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// published counts the jobs queued on the batch lane by Nats-Msg-Id,
// every publish, also those the stream drops as duplicates.
type published struct {
	mu     sync.Mutex
	counts map[string]int
}

func (f *fixture) watchPublished(t *testing.T) *published {
	t.Helper()
	p := &published{counts: map[string]int{}}
	sub, err := f.q.Conn.Subscribe(schema.SubjectBatch, func(m *nats.Msg) {
		var env schema.Envelope
		if err := json.Unmarshal(m.Data, &env); err != nil {
			t.Errorf("a message on the batch lane is not an envelope: %v", err)
			return
		}
		p.mu.Lock()
		p.counts[env.ID]++
		p.mu.Unlock()
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := f.q.Conn.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return p
}

func (p *published) count(jobID string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.counts[jobID]
}

// records collects every revision of every batch record, as written.
type records struct {
	mu    sync.Mutex
	revs  map[string][]Record // by batch id
	order []Record            // every revision, in the bucket's order
}

func (f *fixture) watchRecords(t *testing.T) *records {
	t.Helper()
	kv, err := f.q.JS.KeyValue(testCtx(t), schema.BucketBatches)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	w, err := kv.Watch(ctx, "b.*", jetstream.IgnoreDeletes())
	if err != nil {
		t.Fatal(err)
	}
	rs := &records{revs: map[string][]Record{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range w.Updates() {
			if e == nil {
				continue
			}
			var rec Record
			if err := json.Unmarshal(e.Value(), &rec); err != nil {
				t.Errorf("record %s: %v", e.Key(), err)
				continue
			}
			rs.mu.Lock()
			rs.revs[rec.Batch.ID] = append(rs.revs[rec.Batch.ID], rec)
			rs.order = append(rs.order, rec)
			rs.mu.Unlock()
		}
	}()
	t.Cleanup(func() { _ = w.Stop(); cancel(); <-done })
	return rs
}

// all lists every revision of every batch, in the bucket's order.
func (rs *records) all() []Record {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return slices.Clone(rs.order)
}

func (rs *records) of(id string) []Record {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	return append([]Record(nil), rs.revs[id]...)
}

// changes lists the values of field over the revisions of batch id,
// without repeats: the owners, or the statuses, in the order written.
func (rs *records) changes(id string, field func(Record) string) []string {
	var out []string
	for _, r := range rs.of(id) {
		if v := field(r); len(out) == 0 || out[len(out)-1] != v {
			out = append(out, v)
		}
	}
	return out
}

func owner(r Record) string  { return r.Owner }
func status(r Record) string { return r.Batch.Status }

// waitFor polls cond until it holds; a minute is far more than any step
// of these tests takes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("waited a minute for %s", what)
		}
	}
}

// jsonString is v as JSON, to compare values whole.
func jsonString(t *testing.T, v any) string {
	t.Helper()
	data, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
