package bridge

import (
	"bufio"
	"context"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// publishLane queues n messages on a lane subject and returns their
// stream sequences.
func publishLane(t *testing.T, js jetstream.JetStream, subject string, n int) []uint64 {
	t.Helper()
	var seqs []uint64
	for range n {
		ack, err := js.PublishMsg(context.Background(), &nats.Msg{Subject: subject, Data: []byte("{}")})
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, ack.Sequence)
	}
	return seqs
}

// TestQueuePositions: a queued interactive request has the queued
// interactive jobs before it ahead of it; a batch one every queued
// interactive job and the batch jobs before it; a request a worker took,
// or one not on the lane asked, is not queued. No job taken in the last
// minute: no ETA.
func TestQueuePositions(t *testing.T) {
	q := queuetest.Start(t, queue.Config{Memory: true})
	b := publishLane(t, q.JS, schema.SubjectBatch, 3)
	i := publishLane(t, q.JS, schema.SubjectInteractive, 4)
	late := publishLane(t, q.JS, schema.SubjectBatch, 1)
	taken, err := q.Consumer.Fetch(1) // a worker takes i[0]
	if err != nil {
		t.Fatal(err)
	}
	for m := range taken.Messages() {
		_ = m.Ack()
	}
	qp := newQueuePositions(q.JS)
	for _, tc := range []struct {
		name  string
		seq   uint64
		lane  string
		ahead int
		found bool
	}{
		{"taken", i[0], schema.SubjectInteractive, 0, false},
		{"next", i[1], schema.SubjectInteractive, 0, true},
		{"third", i[3], schema.SubjectInteractive, 2, true},
		{"batch first", b[0], schema.SubjectBatch, 3, true},
		{"batch third", b[2], schema.SubjectBatch, 5, true},
		{"batch after interactive", late[0], schema.SubjectBatch, 6, true},
		{"wrong lane", i[2], schema.SubjectBatch, 0, false},
		{"queued after the snapshot", late[0] + 1, schema.SubjectInteractive, 3, true},
	} {
		pos, found, err := qp.position(context.Background(), tc.seq, tc.lane, true)
		if err != nil {
			t.Fatal(err)
		}
		if found != tc.found || pos.Ahead != tc.ahead || pos.Estimated || pos.ETA != 0 {
			t.Errorf("%s: %+v found %v, want %d ahead, found %v, exact, no ETA", tc.name, pos, found, tc.ahead, tc.found)
		}
	}
}

// TestLaneSnapshotEstimate: past the messages a snapshot read, the lane's
// remaining queued jobs are spread over the sequences after them.
func TestLaneSnapshotEstimate(t *testing.T) {
	// 2 read (seqs 11 and 13), 10 more queued among sequences 14-113.
	s := laneSnapshot{pending: 12, delivered: 10, seqs: []uint64{11, 13}}
	for _, tc := range []struct {
		seq   uint64
		ahead int
	}{{14, 2}, {64, 2 + 5}, {113, 2 + 9}} {
		n, estimated, found := s.ahead(tc.seq, 113)
		if !found || !estimated || n != tc.ahead {
			t.Errorf("seq %d: %d ahead (estimated %v, found %v), want about %d, estimated", tc.seq, n, estimated, found, tc.ahead)
		}
	}
	if _, _, found := s.ahead(12, 113); found {
		t.Error("seq 12, between two read messages of the lane, is not a queued job of it")
	}
}

// TestQueuePositionETA: with a worker taking one interactive job every
// 50 ms, the ETA of a job 30 places back matches when it is taken within
// 50% plus 300 ms (the worker's ticker and NATS share a busy machine;
// TestQueuePositionRate checks the arithmetic exactly).
func TestQueuePositionETA(t *testing.T) {
	const jobs, every = 60, 50 * time.Millisecond
	q := queuetest.Start(t, queue.Config{Memory: true})
	seqs := publishLane(t, q.JS, schema.SubjectInteractive, jobs)
	var mu sync.Mutex
	takenAt := map[uint64]time.Time{}
	done := make(chan struct{})
	go func() { // the steady worker
		defer close(done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for range jobs {
			<-tick.C
			m, err := q.Consumer.Next(jetstream.FetchMaxWait(5 * time.Second))
			if err != nil {
				return
			}
			md, _ := m.Metadata()
			mu.Lock()
			takenAt[md.Sequence.Stream] = time.Now()
			mu.Unlock()
			_ = m.Ack()
		}
	}()
	qp := newQueuePositions(q.JS)
	ctx := context.Background()
	last := seqs[jobs-1]
	if _, _, err := qp.position(ctx, last, schema.SubjectInteractive, true); err != nil { // the first sample
		t.Fatal(err)
	}
	time.Sleep(1500 * time.Millisecond)
	pos, found, err := qp.position(ctx, last, schema.SubjectInteractive, true)
	asked := time.Now()
	if err != nil || !found || pos.ETA == 0 {
		t.Fatalf("position of the last job after 1.5 s: %+v found %v err %v, want queued with an ETA", pos, found, err)
	}
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("the steady worker did not take every job within 30s")
	}
	mu.Lock()
	actual := takenAt[last].Sub(asked)
	mu.Unlock()
	if diff := (pos.ETA - actual).Abs(); diff > actual/2+300*time.Millisecond {
		t.Errorf("last job: %d ahead, ETA %s, taken after %s: off by %s, more than 50%% + 300ms", pos.Ahead, pos.ETA, actual, diff)
	}
	t.Logf("last job: %d ahead, ETA %s, taken after %s", pos.Ahead, pos.ETA.Round(time.Millisecond), actual.Round(time.Millisecond))
}

// queuedComment is a streamed answer's keep-alive while it is queued.
var queuedComment = regexp.MustCompile(`^queued position=\d+( eta_ms=\d+)?$`)

// TestQueuePositionsOverHTTP: a queued job's 202 answer and GET show how
// many jobs a worker takes before it (the header too, on the 202), and
// GET follows the queue as workers take jobs; a streamed chat request's
// keep-alives say where it stands while it is queued; no ETA before any
// job was taken.
func TestQueuePositionsOverHTTP(t *testing.T) {
	f := newFixture(t, Config{MasterKey: "sk-master", KeepAlive: 50 * time.Millisecond})
	f.gw.positions.every = 0 // a fresh snapshot for every question
	auth := []string{"Authorization", "Bearer sk-master"}
	var jobIDs []string
	for i := range 3 {
		resp, body := f.do(t, "POST", "/v1/queue/jobs", chatBody("claude-3.5-sonnet", "job"), auth...)
		j := decodeJob(t, body)
		if resp.StatusCode != http.StatusAccepted || j.Position == nil || *j.Position != i || j.EtaMs != nil ||
			resp.Header.Get(HeaderQueuePosition) != strconv.Itoa(i) {
			t.Fatalf("job %d: %d, %s: %q; want 202 at position %d, no eta", i, resp.StatusCode, HeaderQueuePosition, body, i)
		}
		jobIDs = append(jobIDs, j.ID)
	}
	position := func(id string) *int {
		t.Helper()
		resp, body := f.do(t, "GET", "/v1/queue/jobs/"+id, "", auth...)
		if resp.StatusCode != 200 {
			t.Fatalf("GET %s: %d %s", id, resp.StatusCode, body)
		}
		return decodeJob(t, body).Position
	}
	if p := position(jobIDs[2]); p == nil || *p != 2 {
		t.Fatalf("third job's position %v, want 2", p)
	}
	f.runOneJob(t, textAnswer(0, nil))
	if p := position(jobIDs[2]); p == nil || *p != 1 {
		t.Fatalf("third job's position %v after a worker took the first, want 1", p)
	}
	if p := position(jobIDs[0]); p != nil {
		t.Errorf("a finished job has position %d", *p)
	}

	// Interactive: ahead of every batch job. Nobody takes it here.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "POST", f.srv.URL+"/v1/chat/completions", strings.NewReader(streamBody("claude-3.5-sonnet", "wait", "")))
	req.Header.Set("Authorization", "Bearer sk-master")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	// Keep-alives every 50 ms: one says where the request stands (the
	// first may be plain, if the queue's snapshot took longer than a
	// keep-alive waits for it).
	br := bufio.NewReader(resp.Body)
	var comments []string
	for deadline := time.Now().Add(10 * time.Second); ; {
		line, err := br.ReadString('\n')
		if err != nil || time.Now().After(deadline) {
			t.Fatalf("no queue position in the keep-alives within 10s: %q (%v)", comments, err)
		}
		if c, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), ": "); ok {
			comments = append(comments, c)
			if queuedComment.MatchString(c) {
				if !strings.HasPrefix(c, "queued position=0") {
					t.Fatalf("keep-alive %q, want position 0: nothing is ahead of it in the interactive lane", c)
				}
				break
			}
		}
	}
	if p := position(jobIDs[2]); p == nil || *p != 2 {
		t.Errorf("third job's position %v with an interactive request queued, want 2", p)
	}
}

// TestQueuePositionRate: the rate is the deliveries over the samples of
// the last minute, and the ETA of a job n places back is n+1 deliveries at
// that rate; with no two samples in the last minute it is unknown.
func TestQueuePositionRate(t *testing.T) {
	q := newQueuePositions(nil)
	t0 := time.Unix(1_800_000_000, 0)
	q.sample(t0, 100)
	if r := q.rate(); r != 0 {
		t.Fatalf("rate %v from one sample, want unknown (0)", r)
	}
	q.sample(t0.Add(2*time.Second), 140)
	if r := q.rate(); r != 20 {
		t.Fatalf("rate %v, want 20 a second", r)
	}
	q.sample(t0.Add(4*time.Second), 160) // 60 in 4 s
	if r := q.rate(); r != 15 {
		t.Fatalf("rate %v, want 15 a second", r)
	}
	q.sample(t0.Add(10*time.Minute), 160) // ten quiet minutes: the old samples go
	if r, n := q.rate(), len(q.samples); r != 0 || n != 1 {
		t.Fatalf("rate %v from %d samples after 10 quiet minutes, want unknown from 1", r, n)
	}
}
