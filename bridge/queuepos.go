package bridge

// This file holds queue positions: how many jobs a worker takes before a
// queued request, and when one is expected to take it. Workers take the
// interactive lane first, so a batch job has every queued interactive job
// ahead of it too.
//
// The lanes share one work-queue stream, which allows no reader besides
// the workers' consumers: a snapshot reads each lane's consumer (jobs not
// yet delivered, the last delivered sequence) and the sequences of its
// first positionsScan queued messages, one stream read each. A request
// among those has an exact position; one further back gets an estimate
// from the lane's share of the sequences after them.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

const (
	// positionsEvery is how old a snapshot of the lanes may be; queries in
	// between share it.
	positionsEvery = time.Second
	// positionsScan is how many queued messages of a lane a snapshot reads
	// (each read is a whole message).
	positionsScan = 100
	// positionsTimeout bounds a snapshot's reads; a snapshot that fails is
	// not tried again before positionsEvery.
	positionsTimeout = 2 * time.Second
	// rateWindow is how far back the rate workers take jobs at is
	// measured; a rate needs two samples at least rateMinSpan apart.
	rateWindow  = time.Minute
	rateMinSpan = time.Second
)

// Position is where a queued request stands.
type Position struct {
	// Ahead is how many jobs a worker takes before this one (0: next).
	Ahead int
	// Estimated: the request is further back than a snapshot reads, and
	// Ahead is estimated.
	Estimated bool
	// ETA is how long until a worker takes it, from the rate workers took
	// jobs at over the last minute; zero when unknown (no job taken in
	// that time).
	ETA time.Duration
}

// laneSnapshot is one lane at one time.
type laneSnapshot struct {
	pending   int      // jobs not yet delivered to a worker
	delivered uint64   // the last stream sequence delivered to a worker
	seqs      []uint64 // the first positionsScan queued messages' sequences, ascending
	taken     uint64   // deliveries so far (the consumer's sequence)
}

// deliverySample is the lanes' deliveries so far, at a time.
type deliverySample struct {
	at    time.Time
	taken uint64
}

// queuePositions answers positions from a snapshot at most positionsEvery
// old, taken by one goroutine at a time outside the lock, so a slow NATS
// never holds up a question: a streamed answer's keep-alive uses the
// snapshot there is, and only a question that may wait (the jobs API)
// waits for a fresh one, within its context. Safe for concurrent use.
type queuePositions struct {
	js    jetstream.JetStream
	now   func() time.Time
	every time.Duration // positionsEvery

	mu          sync.Mutex
	at          time.Time     // when the last snapshot was started
	ok          bool          // the last snapshot succeeded
	refreshing  chan struct{} // closed when the snapshot under way is done; nil when none is
	last        uint64        // the stream's last sequence
	interactive laneSnapshot
	batch       laneSnapshot
	samples     []deliverySample // oldest first, within rateWindow
}

func newQueuePositions(js jetstream.JetStream) *queuePositions {
	return &queuePositions{js: js, now: time.Now, every: positionsEvery}
}

// position returns where the message at stream sequence seq, queued on
// lane (a lane subject), stands; found is false when no worker is waiting
// to take it any more (it was taken, or it is not on that lane), or when
// no snapshot is known. A stale snapshot is refreshed in the background;
// with wait the question waits for that (within ctx), else it is answered
// from the snapshot there is.
func (q *queuePositions) position(ctx context.Context, seq uint64, lane string, wait bool) (pos Position, found bool, err error) {
	q.mu.Lock()
	if q.now().Sub(q.at) >= q.every && q.refreshing == nil {
		q.at, q.refreshing = q.now(), make(chan struct{})
		go q.refresh(q.refreshing)
	}
	if done := q.refreshing; wait && done != nil {
		q.mu.Unlock()
		select {
		case <-done:
		case <-ctx.Done():
			return Position{}, false, ctx.Err()
		}
		q.mu.Lock()
	}
	defer q.mu.Unlock()
	if !q.ok {
		return Position{}, false, nil
	}
	var snap laneSnapshot
	var before int // queued jobs of the lane workers take first
	switch lane {
	case schema.SubjectInteractive:
		snap = q.interactive
	case schema.SubjectBatch:
		snap, before = q.batch, q.interactive.pending
	default:
		return Position{}, false, fmt.Errorf("no lane %q", lane)
	}
	ahead, estimated, found := snap.ahead(seq, q.last)
	if !found {
		return Position{}, false, nil
	}
	pos = Position{Ahead: before + ahead, Estimated: estimated}
	if rate := q.rate(); rate > 0 {
		pos.ETA = time.Duration(float64(pos.Ahead+1) / rate * float64(time.Second))
	}
	return pos, true, nil
}

// ahead is how many queued jobs of the lane come before seq; last is the
// stream's last sequence at the snapshot.
func (s laneSnapshot) ahead(seq, last uint64) (n int, estimated, found bool) {
	if seq <= s.delivered {
		return 0, false, false
	}
	if i, ok := slices.BinarySearch(s.seqs, seq); ok {
		return i, false, true
	} else if i < len(s.seqs) {
		return 0, false, false // not a queued message of this lane
	}
	read := len(s.seqs)
	switch {
	case seq > last: // queued after the snapshot: every queued job is ahead
		return s.pending, false, true
	case read == s.pending: // every queued job was read, and seq is none
		return 0, false, false
	}
	from := s.delivered
	if read > 0 {
		from = s.seqs[read-1]
	}
	// The rest of the lane's queued jobs are spread over (from, last].
	share := float64(seq-from-1) / float64(last-from)
	rest := int(math.Round(share * float64(s.pending-read)))
	return read + min(rest, s.pending-read-1), true, true
}

// rate is jobs taken per second over the samples, 0 when unknown.
func (q *queuePositions) rate() float64 {
	if len(q.samples) < 2 {
		return 0
	}
	first, last := q.samples[0], q.samples[len(q.samples)-1]
	span := last.at.Sub(first.at)
	if span < rateMinSpan || last.taken <= first.taken {
		return 0
	}
	return float64(last.taken-first.taken) / span.Seconds()
}

// refresh takes a snapshot of both lanes, puts it in force with a
// delivery sample, and closes done.
func (q *queuePositions) refresh(done chan struct{}) {
	ctx, cancel := context.WithTimeout(context.Background(), positionsTimeout)
	defer cancel()
	last, interactive, batch, err := q.read(ctx)
	q.mu.Lock()
	defer q.mu.Unlock()
	defer close(done)
	q.refreshing, q.ok = nil, err == nil
	if err != nil {
		return // no positions until a snapshot succeeds
	}
	q.last, q.interactive, q.batch = last, interactive, batch
	q.sample(q.now(), interactive.taken+batch.taken)
}

// sample adds the lanes' deliveries so far at now, and forgets samples
// older than rateWindow: the rate is the last minute's, or unknown.
func (q *queuePositions) sample(now time.Time, taken uint64) {
	q.samples = append(q.samples, deliverySample{at: now, taken: taken})
	drop := 0
	for drop < len(q.samples) && now.Sub(q.samples[drop].at) > rateWindow {
		drop++
	}
	q.samples = q.samples[drop:]
}

// read reads the stream's last sequence and both lanes.
func (q *queuePositions) read(ctx context.Context) (last uint64, interactive, batch laneSnapshot, err error) {
	stream, err := q.js.Stream(ctx, schema.StreamRequests)
	if err != nil {
		return 0, interactive, batch, fmt.Errorf("queue position: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return 0, interactive, batch, fmt.Errorf("queue position: %w", err)
	}
	last = info.State.LastSeq
	if interactive, err = lane(ctx, stream, last, schema.ConsumerWorkers, schema.SubjectInteractive); err != nil {
		return 0, interactive, batch, err
	}
	batch, err = lane(ctx, stream, last, schema.ConsumerBatch, schema.SubjectBatch)
	return last, interactive, batch, err
}

// lane reads a lane's consumer and its first queued messages' sequences.
func lane(ctx context.Context, stream jetstream.Stream, last uint64, consumer, subject string) (laneSnapshot, error) {
	cons, err := stream.Consumer(ctx, consumer)
	if err != nil {
		return laneSnapshot{}, fmt.Errorf("queue position: consumer %s: %w", consumer, err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return laneSnapshot{}, fmt.Errorf("queue position: consumer %s: %w", consumer, err)
	}
	s := laneSnapshot{pending: int(info.NumPending), delivered: info.Delivered.Stream, taken: info.Delivered.Consumer}
	next := s.delivered + 1
	for len(s.seqs) < min(s.pending, positionsScan) && next <= last {
		m, err := stream.GetMsg(ctx, next, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return laneSnapshot{}, fmt.Errorf("queue position: read %s: %w", subject, err)
		}
		s.seqs = append(s.seqs, m.Sequence)
		next = m.Sequence + 1
	}
	return s, nil
}

// keepAlivePositionWait bounds how long a keep-alive waits for a fresh
// snapshot of the queue; past it, it says what the last one said.
const keepAlivePositionWait = 250 * time.Millisecond

// HeaderQueuePosition, on a 202 answer to a queued job, is how many jobs
// a worker takes before it (queuePositions).
const HeaderQueuePosition = "X-Laas-Bridge-Queue-Position"

// keepAliveComment is a streamed answer's keep-alive while p waits: with
// its place in the queue while it is queued (": queued position=12
// eta_ms=3400", eta_ms when known), else a plain keep-alive.
func (g *Gateway) keepAliveComment(ctx context.Context, p *pending) string {
	if p.seq == 0 {
		return sseKeepAlive
	}
	// A fresh snapshot is waited for briefly, so a slow NATS delays a
	// keep-alive by keepAlivePositionWait at most.
	ctx, cancel := context.WithTimeout(ctx, keepAlivePositionWait)
	defer cancel()
	pos, found, err := g.positions.position(ctx, p.seq, p.lane, true)
	if err != nil || !found {
		return sseKeepAlive
	}
	line := fmt.Sprintf(": queued position=%d", pos.Ahead)
	if pos.ETA > 0 {
		line += fmt.Sprintf(" eta_ms=%d", pos.ETA.Milliseconds())
	}
	return line + "\n\n"
}

// place is where a queued message stands, for the jobs API: position and
// ETA in milliseconds, nil when unknown (not queued, or the snapshot
// failed: a position is never worth an error).
func (g *Gateway) place(ctx context.Context, seq uint64, lane string) (position *int, etaMs *int64) {
	if seq == 0 {
		return nil, nil
	}
	pos, found, err := g.positions.position(ctx, seq, lane, true)
	if err != nil {
		g.log.Warn("could not read the queue's positions", "error", err)
		return nil, nil
	}
	if !found {
		return nil, nil
	}
	position = &pos.Ahead
	if pos.ETA > 0 {
		ms := pos.ETA.Milliseconds()
		etaMs = &ms
	}
	return position, etaMs
}
