// Package dlq reads and replays dead letters: jobs that ran out of attempts,
// kept in schema.StreamDead by the workers (worker.DeadLetters). A replay
// goes through the admission core like any other request: it is checked
// again, queued as a job on the batch lane under an id of its own, and the
// dead letter and its body are deleted only once that job is durably
// queued.
package dlq

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

// ErrNoStream means the dead-letter stream does not exist: no worker has
// started on this NATS yet.
var ErrNoStream = errors.New("no dead-letter stream")

// ErrNotFound means no dead letter has that request id.
var ErrNotFound = errors.New("no dead letter")

// Entry is one dead letter and its sequence in the dead-letter stream.
type Entry struct {
	Seq    uint64
	Record schema.DeadLetterRecord
}

// Store reads and replays the dead letters. Create it with Open.
type Store struct {
	js     jetstream.JetStream
	dead   jetstream.Stream
	bodies jetstream.ObjectStore
	// Skipped, when set, hears of a message in the stream that is not a
	// dead-letter record.
	Skipped func(seq uint64, subject string)
}

// Open opens the dead-letter stream and the large-body store.
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	dead, err := js.Stream(ctx, schema.StreamDead)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w %s: a worker (or `laas-bridge serve`) creates it when it starts", ErrNoStream, schema.StreamDead)
	}
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream %s: %w", schema.StreamDead, err)
	}
	bodies, err := js.ObjectStore(ctx, schema.BucketBodies)
	if err != nil {
		return nil, fmt.Errorf("large-body store %s: %w", schema.BucketBodies, err)
	}
	return &Store{js: js, dead: dead, bodies: bodies}, nil
}

// List returns every dead letter, oldest first, without consuming any: an
// ordered consumer reads the stream up to its last message at the start.
func (s *Store) List(ctx context.Context) ([]Entry, error) {
	info, err := s.dead.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream %s: %w", schema.StreamDead, err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	cons, err := s.js.OrderedConsumer(ctx, schema.StreamDead, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", schema.StreamDead, err)
	}
	var out []Entry
	for remaining, last := info.State.Msgs, info.State.LastSeq; ; {
		// Asking for no more than the stream holds ends each fetch as soon
		// as they arrive, not at its expiry.
		batch, err := cons.Fetch(int(min(max(remaining, 1), 256)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", schema.StreamDead, err)
		}
		n, done := 0, false
		for msg := range batch.Messages() {
			n++
			remaining = max(remaining-1, 0)
			md, err := msg.Metadata()
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", schema.StreamDead, err)
			}
			if md.Sequence.Stream > last {
				done = true
				break
			}
			s.add(&out, md.Sequence.Stream, msg.Subject(), msg.Data())
			done = done || md.Sequence.Stream == last || md.NumPending == 0
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("read %s: %w", schema.StreamDead, err)
		}
		if done || n == 0 || ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
}

// add appends a message to out if it is a dead-letter record.
func (s *Store) add(out *[]Entry, seq uint64, subject string, data []byte) {
	var rec schema.DeadLetterRecord
	if err := json.Unmarshal(data, &rec); err != nil || rec.ID == "" {
		if s.Skipped != nil {
			s.Skipped(seq, subject)
		}
		return
	}
	*out = append(*out, Entry{Seq: seq, Record: rec})
}

// Get returns the dead letter of request id (ErrNotFound if none).
func (s *Store) Get(ctx context.Context, id string) (Entry, error) {
	m, err := s.dead.GetLastMsgForSubject(ctx, schema.DeadLetterSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Entry{}, fmt.Errorf("%w for request id %q in %s", ErrNotFound, id, schema.StreamDead)
	}
	if err != nil {
		return Entry{}, fmt.Errorf("read the dead letter of %s: %w", id, err)
	}
	var rec schema.DeadLetterRecord
	if err := json.Unmarshal(m.Data, &rec); err != nil || rec.ID != id {
		return Entry{}, fmt.Errorf("%w for request id %q in %s", ErrNotFound, id, schema.StreamDead)
	}
	return Entry{Seq: m.Sequence, Record: rec}, nil
}

// Replayed is what a replay queued.
type Replayed struct {
	// JobID is the job the replay queued (ReplayID): its result goes to
	// laas.results.<JobID>, its state to the job store.
	JobID string
	// Subject is the lane it was queued on.
	Subject string
	// Duplicate reports that this dead letter had been replayed already
	// (a replay that stopped before deleting it): nothing new was queued.
	Duplicate bool
	// BodyLeft, when set, is why the dead letter's large body could not
	// be deleted (the bucket's TTL will).
	BodyLeft error
}

// Replay queues e's request again through core, as a job of its own
// (ReplayID) on the batch lane, due within timeout; then deletes the dead
// letter and its large body. A replay run twice (after a crash before the
// delete) queues the job once.
func (s *Store) Replay(ctx context.Context, core *admission.Core, e Entry, timeout time.Duration) (Replayed, error) {
	rec := e.Record
	body, err := s.body(ctx, rec)
	if err != nil {
		return Replayed{}, err
	}
	id := ReplayID(rec.ID, e.Seq)
	req := admission.Request{ID: id, Body: body, Door: admission.DoorReplay, Lane: admission.Batch, Timeout: timeout,
		Job: &admission.Job{Record: true}}
	if rec.Owner != "" {
		// The replay is still its key's: the core finds the key as it is now.
		req.Caller = keys.Caller{Key: &keys.Key{Token: rec.Owner}}
	}
	ck, err := core.Check(req)
	if err != nil {
		return Replayed{}, fmt.Errorf("replay %s: refused: %w", rec.ID, err)
	}
	t, err := core.Admit(ctx, ck)
	if err != nil {
		return Replayed{}, fmt.Errorf("replay %s: %w", rec.ID, err)
	}
	r := Replayed{JobID: id, Subject: t.Subject, Duplicate: t.Duplicate}
	// Queued durably: only now may the dead letter go.
	if err := s.dead.DeleteMsg(ctx, e.Seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return r, fmt.Errorf("replay %s: queued as job %s, but the dead letter could not be deleted: %w", rec.ID, id, err)
	}
	if rec.RequestRef != "" {
		if err := s.bodies.Delete(ctx, rec.RequestRef); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			r.BodyLeft = err
		}
	}
	return r, nil
}

// body is a dead letter's request: inline, or from the large-body store.
func (s *Store) body(ctx context.Context, rec schema.DeadLetterRecord) ([]byte, error) {
	body := []byte(rec.Request)
	if rec.RequestRef != "" {
		var err error
		body, err = s.bodies.GetBytes(ctx, rec.RequestRef)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, fmt.Errorf("replay %s: its request body %s is gone from %s (that bucket's TTL ended it)", rec.ID, rec.RequestRef, schema.BucketBodies)
		}
		if err != nil {
			return nil, fmt.Errorf("replay %s: read its request body %s: %w", rec.ID, rec.RequestRef, err)
		}
	}
	if len(body) == 0 {
		return nil, fmt.Errorf("replay %s: the dead letter holds no request to replay", rec.ID)
	}
	return body, nil
}

// notToken matches what may not stand in a request id.
var notToken = regexp.MustCompile(`[^A-Za-z0-9_-]`)

// ReplayID is the job id of the replay of dead letter seq of request id:
// "<id>-replay-<seq>", the id cut to fit 64 characters and any character
// an id may not hold made "_". The same dead letter always gets the same
// id, so a second replay is a duplicate of the first.
func ReplayID(id string, seq uint64) string {
	suffix := "-replay-" + strconv.FormatUint(seq, 10)
	id = notToken.ReplaceAllString(id, "_")
	if len(id) > 64-len(suffix) {
		id = id[:64-len(suffix)]
	}
	return id + suffix
}
