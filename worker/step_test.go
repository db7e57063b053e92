package worker

// This file holds the fixtures of the steps' unit tests: a delivery that
// records how it was settled, in-memory stand-ins for the answers bucket
// and the large-body store, and a pool built around them (no NATS server).

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// fakeMsg is a delivery for step tests. It records every ack of any kind
// in order ("ack", "nak", "nak 1s", "term"); methods it does not define
// panic (the embedded nil Msg).
type fakeMsg struct {
	jetstream.Msg
	subject   string
	data      []byte
	header    nats.Header
	delivered uint64
	seq       uint64 // stream sequence; 1 when unset

	mu         sync.Mutex
	acks       []string
	inProgress int
}

func (m *fakeMsg) Subject() string      { return m.subject }
func (m *fakeMsg) Data() []byte         { return m.data }
func (m *fakeMsg) Headers() nats.Header { return m.header }
func (m *fakeMsg) Metadata() (*jetstream.MsgMetadata, error) {
	return &jetstream.MsgMetadata{NumDelivered: max(1, m.delivered), Sequence: jetstream.SequencePair{Stream: max(1, m.seq), Consumer: 1}}, nil
}
func (m *fakeMsg) record(s string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.acks = append(m.acks, s)
	return nil
}
func (m *fakeMsg) Ack() error  { return m.record("ack") }
func (m *fakeMsg) Nak() error  { return m.record("nak") }
func (m *fakeMsg) Term() error { return m.record("term") }
func (m *fakeMsg) NakWithDelay(d time.Duration) error {
	return m.record("nak " + d.String())
}
func (m *fakeMsg) InProgress() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.inProgress++
	return nil
}

// settled is how the delivery was settled, e.g. "[ack]"; "[]" when not.
func (m *fakeMsg) settled() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return fmt.Sprint(m.acks)
}

// fakeKV is an in-memory answers bucket: Get and Put only.
type fakeKV struct {
	jetstream.KeyValue
	mu     sync.Mutex
	values map[string][]byte
	err    error // returned by Get when set
}

type fakeEntry struct {
	jetstream.KeyValueEntry
	value []byte
}

func (e fakeEntry) Value() []byte { return e.value }

func (kv *fakeKV) Get(_ context.Context, key string) (jetstream.KeyValueEntry, error) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	if kv.err != nil {
		return nil, kv.err
	}
	v, ok := kv.values[key]
	if !ok {
		return nil, jetstream.ErrKeyNotFound
	}
	return fakeEntry{value: v}, nil
}

func (kv *fakeKV) Put(_ context.Context, key string, value []byte) (uint64, error) {
	kv.mu.Lock()
	defer kv.mu.Unlock()
	kv.values[key] = value
	return uint64(len(kv.values)), nil
}

// fakeStore is an in-memory large-body store: GetBytes, PutBytes, Delete.
type fakeStore struct {
	jetstream.ObjectStore
	mu      sync.Mutex
	objects map[string][]byte
	err     error // returned by GetBytes when set
}

// object is name's data, or the error GetBytes and GetInfo return.
func (s *fakeStore) object(name string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err != nil {
		return nil, s.err
	}
	data, ok := s.objects[name]
	if !ok {
		return nil, jetstream.ErrObjectNotFound
	}
	return data, nil
}

func (s *fakeStore) GetBytes(_ context.Context, name string, _ ...jetstream.GetObjectOpt) ([]byte, error) {
	return s.object(name)
}

func (s *fakeStore) GetInfo(_ context.Context, name string, _ ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error) {
	data, err := s.object(name)
	if err != nil {
		return nil, err
	}
	return &jetstream.ObjectInfo{ObjectMeta: jetstream.ObjectMeta{Name: name}, Size: uint64(len(data))}, nil
}

func (s *fakeStore) PutBytes(_ context.Context, name string, data []byte) (*jetstream.ObjectInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[name] = data
	return &jetstream.ObjectInfo{}, nil
}

func (s *fakeStore) Delete(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.objects[name]; !ok {
		return jetstream.ErrObjectNotFound
	}
	delete(s.objects, name)
	return nil
}

// stepFixture is a pool for step tests: MaxDeliver 3, RetryBase 10ms,
// replies recorded instead of sent.
type stepFixture struct {
	p       *Pool
	answers *fakeKV
	bodies  *fakeStore

	mu      sync.Mutex
	sent    []sentReply
	sendErr error
}

type sentReply struct {
	subject string
	data    []byte
}

func newStepFixture(t *testing.T) *stepFixture {
	t.Helper()
	f := &stepFixture{answers: &fakeKV{values: map[string][]byte{}}, bodies: &fakeStore{objects: map[string][]byte{}}}
	cfg := Config{RetryBase: 10 * time.Millisecond, RetryMax: 40 * time.Millisecond}
	cfg.setDefaults()
	f.p = &Pool{cfg: cfg, log: slog.New(slog.DiscardHandler), ackWait: 30 * time.Second, maxDeliver: 3,
		inlineMax: 512 << 10, answers: f.answers, bodies: f.bodies,
		cancels: newCancelSet(time.Hour, maxCancelled, nil)}
	f.p.catalog.Store(catalog(t))
	f.p.send = func(subject string, data []byte) error {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.sendErr != nil {
			return f.sendErr
		}
		f.sent = append(f.sent, sentReply{subject, data})
		return nil
	}
	return f
}

// replies decodes every reply sent so far.
func (f *stepFixture) replies(t *testing.T) []schema.Reply {
	t.Helper()
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []schema.Reply
	for _, s := range f.sent {
		var r schema.Reply
		if err := json.Unmarshal(s.data, &r); err != nil {
			t.Fatalf("reply on %s: %v", s.subject, err)
		}
		out = append(out, r)
	}
	return out
}

// onlyReply is the one reply sent; the test fails unless there is one.
func (f *stepFixture) onlyReply(t *testing.T) schema.Reply {
	t.Helper()
	rs := f.replies(t)
	if len(rs) != 1 {
		t.Fatalf("%d replies sent, want 1: %+v", len(rs), rs)
	}
	return rs[0]
}

// stepJob is a decoded job as the steps after decode see it: request id
// "r1" for model "m", a reply subject, delivery attempt, deadline a minute
// away, a prepared LaaS call.
func stepJob(t *testing.T, subject string, attempt int) (*job, *fakeMsg) {
	t.Helper()
	now := time.Now()
	msg := &fakeMsg{subject: subject, header: nats.Header{}, delivered: uint64(attempt)}
	j := &job{msg: msg, attempt: attempt, received: now, lane: laneOf(subject), log: slog.New(slog.DiscardHandler),
		replyTo: "laas.reply.test.r1", env: schema.Envelope{ID: "r1", Model: "m", EnqueuedAt: now, Deadline: now.Add(time.Minute), Request: json.RawMessage(hello)}}
	m, _ := catalog(t).Lookup("m")
	j.model = m
	j.laasReq = &schema.LaaSRequest{Hash: m.PresetHash, Messages: []schema.LaaSMessage{{Role: "user", Content: []schema.ContentPart{{Type: "text", Text: "hello"}}}}}
	return j, msg
}

// nextRecorder is a next handler that records the jobs and contexts it
// was handed.
type nextRecorder struct {
	mu   sync.Mutex
	jobs []*job
	ctxs []context.Context
}

func (n *nextRecorder) handle(ctx context.Context, j *job) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.jobs = append(n.jobs, j)
	n.ctxs = append(n.ctxs, ctx)
}

func (n *nextRecorder) called() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return len(n.jobs)
}

// code is an error reply's code, "" when it has none.
func code(r schema.Reply) string {
	if r.Error == nil || r.Error.Code == nil {
		return ""
	}
	return *r.Error.Code
}
