package bridge

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// maxStoredResponse bounds a stored response's record. One whose
// conversation (images and PDFs included) would go over it is kept
// without the conversation: GET answers it, previous_response_id refuses
// it by name.
const maxStoredResponse = 512 << 10

// errNoResponse is a response id the store does not hold.
var errNoResponse = errors.New("no such stored response")

// responseStore keeps stored responses (schema.StoredResponse) in the KV
// bucket schema.BucketResponses, keyed by request id; kv is nil on a
// NATS without the bucket (made by queue.Ensure).
type responseStore struct {
	kv jetstream.KeyValue
}

func openResponseStore(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*responseStore, error) {
	kv, err := js.KeyValue(ctx, schema.BucketResponses)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		log.Warn("no stored-responses bucket: responses are answered but not stored, and background responses are refused", "bucket", schema.BucketResponses)
		return &responseStore{}, nil
	case err != nil:
		return nil, fmt.Errorf("stored responses %s: %w", schema.BucketResponses, err)
	}
	return &responseStore{kv: kv}, nil
}

func (s *responseStore) ok() bool { return s.kv != nil }

// unavailable is the 503 of a store that cannot answer (cause may be nil).
func (s *responseStore) unavailable(cause error) *schema.Error {
	return storeUnavailable("The response store", cause)
}

// put keeps rec, without its conversation when the record would be larger
// than maxStoredResponse: a new record (Revision 0) only if its id is
// not taken, else only over the revision it was read at, so that a
// record deleted (or changed) meanwhile is not brought back or
// overwritten (jetstream.ErrKeyExists then).
func (s *responseStore) put(ctx context.Context, rec *schema.StoredResponse) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if len(data) > maxStoredResponse && len(rec.Conversation) > 0 {
		rec.Conversation, rec.ConversationDropped = nil, true
		if data, err = json.Marshal(rec); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var rev uint64
	if rec.Revision == 0 {
		rev, err = s.kv.Create(ctx, rec.ID, data)
	} else {
		rev, err = s.kv.Update(ctx, rec.ID, data, rec.Revision)
	}
	if err != nil {
		return err
	}
	rec.Revision = rev
	return nil
}

func (s *responseStore) get(ctx context.Context, id string) (*schema.StoredResponse, error) {
	e, err := s.kv.Get(ctx, id)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, errNoResponse
	}
	if err != nil {
		return nil, err
	}
	var rec schema.StoredResponse
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, fmt.Errorf("decode stored response %s: %w", id, err)
	}
	rec.Revision = e.Revision()
	return &rec, nil
}

func (s *responseStore) delete(ctx context.Context, id string) error {
	return s.kv.Purge(ctx, id)
}

// forget removes id's record, waiting at most 5 s, reporting nothing:
// the bucket's TTL ends a record it could not remove.
func (s *responseStore) forget(id string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = s.kv.Purge(ctx, id)
}
