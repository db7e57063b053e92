package batch

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

// ErrNotFound is returned for a file or batch that does not exist.
var ErrNotFound = errors.New("not found")

// Store reads and writes files and batch records. Safe for concurrent use.
type Store struct {
	files       jetstream.ObjectStore
	filesStream jetstream.Stream // the files bucket's stream, for chunkReader
	batches     jetstream.KeyValue
}

// Open opens the Batch API's buckets, which must exist (see queue.Ensure).
func Open(ctx context.Context, js jetstream.JetStream) (*Store, error) {
	files, err := js.ObjectStore(ctx, schema.BucketFiles)
	if err != nil {
		return nil, fmt.Errorf("files store %s: %w", schema.BucketFiles, err)
	}
	filesStream, err := js.Stream(ctx, "OBJ_"+schema.BucketFiles)
	if err != nil {
		return nil, fmt.Errorf("files store %s: %w", schema.BucketFiles, err)
	}
	batches, err := js.KeyValue(ctx, schema.BucketBatches)
	if err != nil {
		return nil, fmt.Errorf("batches bucket %s: %w", schema.BucketBatches, err)
	}
	return &Store{files: files, filesStream: filesStream, batches: batches}, nil
}

// NewFileID returns a fresh file id, "file-" and schema.NewID (128 random
// bits): an id nobody can guess from another.
func NewFileID() string { return "file-" + schema.NewID() }

// NewBatchID returns a fresh batch id, "batch_<time><random>", the random
// part schema.NewID: ids of later batches sort after earlier ones (to the
// millisecond), which is how listing finds the newest first.
func NewBatchID(now time.Time) string {
	ts := strconv.FormatInt(now.UnixMilli(), 36)
	return "batch_" + strings.Repeat("0", max(0, 9-len(ts))) + ts + schema.NewID()
}

// NewBatch returns a new batch on inputFileID, validating, with OpenAI's
// only endpoint and completion window; the HTTP API and `laas-bridge batch
// --nats` both create batches with it.
func NewBatch(inputFileID string, metadata map[string]string, now time.Time) schema.Batch {
	expires := now.Add(24 * time.Hour).Unix()
	return schema.Batch{
		ID: NewBatchID(now), Object: "batch", Endpoint: schema.BatchEndpoint, InputFileID: inputFileID,
		CompletionWindow: schema.BatchCompletionWindow, Status: schema.BatchValidating, CreatedAt: now.Unix(), ExpiresAt: &expires,
		Metadata: metadata,
	}
}

// ValidFileID reports whether id can name an API file (not an internal object).
func ValidFileID(id string) bool {
	return strings.HasPrefix(id, "file-") && schema.ValidRequestID(id)
}

// ValidBatchID reports whether id can name a batch.
func ValidBatchID(id string) bool {
	return strings.HasPrefix(id, "batch_") && len(id) <= 48 && schema.ValidRequestID(id)
}

// Object metadata keys of a file.
const (
	metaPurpose   = "purpose"
	metaFilename  = "filename"
	metaLines     = "lines"
	metaCreatedBy = "created_by"
)

// PutFile stores a file under id, reading r to its end. createdBy is its
// owner (keys.Caller.Owner of whoever made it; "" for the admin).
func (s *Store) PutFile(ctx context.Context, id, createdBy, filename, purpose string, lines int, r io.Reader) (schema.FileObject, error) {
	meta := map[string]string{metaPurpose: purpose, metaFilename: filename, metaLines: strconv.Itoa(lines)}
	if createdBy != "" {
		meta[metaCreatedBy] = createdBy
	}
	info, err := s.files.Put(ctx, jetstream.ObjectMeta{Name: id, Metadata: meta}, r)
	if err != nil {
		return schema.FileObject{}, err
	}
	return fileObject(info), nil
}

// File returns a file's object.
func (s *Store) File(ctx context.Context, id string) (schema.FileObject, error) {
	if !ValidFileID(id) {
		return schema.FileObject{}, ErrNotFound
	}
	info, err := s.files.GetInfo(ctx, id)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return schema.FileObject{}, ErrNotFound
	}
	if err != nil {
		return schema.FileObject{}, err
	}
	return fileObject(info), nil
}

// Files lists the files, newest first.
func (s *Store) Files(ctx context.Context) ([]schema.FileObject, error) {
	infos, err := s.files.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var out []schema.FileObject
	for _, info := range infos {
		if ValidFileID(info.Name) {
			out = append(out, fileObject(info))
		}
	}
	slices.SortFunc(out, func(a, b schema.FileObject) int {
		if a.CreatedAt != b.CreatedAt {
			return int(b.CreatedAt - a.CreatedAt)
		}
		return strings.Compare(b.ID, a.ID)
	})
	return out, nil
}

// OpenFile returns a reader of a file's content; close it.
func (s *Store) OpenFile(ctx context.Context, id string) (jetstream.ObjectResult, error) {
	if !ValidFileID(id) {
		return nil, ErrNotFound
	}
	r, err := s.files.Get(ctx, id)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, ErrNotFound
	}
	return r, err
}

// DeleteFile deletes a file.
func (s *Store) DeleteFile(ctx context.Context, id string) error {
	// Delete marks a deleted object deleted again without an error: a file
	// deleted before must be not found.
	if _, err := s.File(ctx, id); err != nil {
		return err
	}
	err := s.files.Delete(ctx, id)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return ErrNotFound
	}
	return err
}

func fileObject(info *jetstream.ObjectInfo) schema.FileObject {
	created := info.ModTime.Unix()
	return schema.FileObject{
		ID: info.Name, Object: "file", Bytes: int64(info.Size), CreatedAt: created,
		ExpiresAt: info.ModTime.Add(filesTTL).Unix(),
		Filename:  info.Metadata[metaFilename], Purpose: info.Metadata[metaPurpose], Status: "processed",
		CreatedBy: info.Metadata[metaCreatedBy],
	}
}

// filesTTL is the files bucket's TTL (queue.FilesTTL; not imported to
// keep this package free of provisioning).
const filesTTL = 30 * 24 * time.Hour

// Record is what the batches bucket keeps for a batch.
type Record struct {
	// Batch is the OpenAI object, as callers see it.
	Batch schema.Batch `json:"batch"`
	// CreatedBy owns the batch: keys.Caller.Owner of whoever created it
	// ("" for the admin, and for batches recorded before owners were).
	// Its lines are admitted as that caller, and its output and error
	// files are theirs. Never shown in an answer.
	CreatedBy string `json:"created_by,omitempty"`
	// Owner is the runner that drives the batch, until LeaseUntil.
	Owner      string    `json:"owner,omitempty"`
	LeaseUntil time.Time `json:"lease_until"`
	// Traceparent is the W3C trace context of the request that created
	// the batch, when tracing was on: each line's admission span links to
	// it (admission.BatchLine.Traceparent).
	Traceparent string `json:"traceparent,omitempty"`
	// Valid is how many lines passed validation; Published how many of
	// them (in file order) the queue has stored.
	Valid     int `json:"valid"`
	Published int `json:"published"`
	// Ending is the final status a finalizing batch is heading for:
	// completed or expired.
	Ending string `json:"ending,omitempty"`
	// ValidationFailed counts the lines refused up front.
	ValidationFailed int `json:"validation_failed"`
}

// Creator is the caller the batch's lines are checked and admitted as:
// the admin for a batch without an owner, else the virtual key whose
// token is CreatedBy. Only the token is kept, so the Key carries nothing
// else: whatever enforces a key's model access and limits resolves them
// by its Token (the keys store's id), as the key stands when the line is
// admitted.
func (r Record) Creator() keys.Caller {
	if r.CreatedBy == "" {
		return keys.Caller{}
	}
	return keys.Caller{Key: &keys.Key{Token: r.CreatedBy}}
}

func recordKey(id string) string { return "b." + id }
func activeKey(id string) string { return "active." + id }

// ownerKey marks batch id as one of createdBy's (Record.CreatedBy) not
// finished: what Unfinished counts, without reading anyone else's
// batches. The creator is hashed: a KV key takes few characters, and
// the marker's name says nothing of the key.
func ownerKey(createdBy, id string) string { return ownerPrefix(createdBy) + id }

func ownerPrefix(createdBy string) string {
	h := sha256.Sum256([]byte(createdBy))
	return "owner." + hex.EncodeToString(h[:12]) + "."
}

// CreateBatch stores a new batch and marks it active for the runners.
func (s *Store) CreateBatch(ctx context.Context, rec *Record) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	// The marker first: a record without one would never be run; a marker
	// without a record is removed by the runners.
	if _, err := s.batches.Put(ctx, activeKey(rec.Batch.ID), nil); err != nil {
		return err
	}
	if rec.CreatedBy != "" {
		if _, err := s.batches.Put(ctx, ownerKey(rec.CreatedBy, rec.Batch.ID), nil); err != nil {
			return err
		}
	}
	_, err = s.batches.Create(ctx, recordKey(rec.Batch.ID), data)
	return err
}

// Batch returns a batch's record and its revision.
func (s *Store) Batch(ctx context.Context, id string) (*Record, uint64, error) {
	if !ValidBatchID(id) {
		return nil, 0, ErrNotFound
	}
	e, err := s.batches.Get(ctx, recordKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, err
	}
	var rec Record
	if err := json.Unmarshal(e.Value(), &rec); err != nil {
		return nil, 0, fmt.Errorf("decode batch %s: %w", id, err)
	}
	return &rec, e.Revision(), nil
}

// Update applies mutate to the newest record of batch id and writes it
// back with compare-and-set, trying again when another writer came first.
// An error from mutate is returned as is, and nothing is written.
func (s *Store) Update(ctx context.Context, id string, mutate func(*Record) error) (*Record, error) {
	for {
		rec, rev, err := s.Batch(ctx, id)
		if err != nil {
			return nil, err
		}
		if err := mutate(rec); err != nil {
			return rec, err
		}
		data, err := json.Marshal(rec)
		if err != nil {
			return nil, err
		}
		_, err = s.batches.Update(ctx, recordKey(id), data, rev)
		if err == nil {
			return rec, nil
		}
		if !errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
	}
}

// activeIDs lists the batches marked active, with each marker's time.
func (s *Store) activeIDs(ctx context.Context) (map[string]time.Time, error) {
	lister, err := s.batches.ListKeysFiltered(ctx, "active.*")
	if err != nil {
		return nil, err
	}
	out := map[string]time.Time{}
	for k := range lister.Keys() {
		out[strings.TrimPrefix(k, "active.")] = time.Time{}
	}
	for id := range out {
		if e, err := s.batches.Get(ctx, activeKey(id)); err == nil {
			out[id] = e.Created()
		}
	}
	return out, nil
}

// Unfinished counts the batches of createdBy (Record.CreatedBy) not done:
// what POST /v1/batches holds against a key's cap. It reads only
// createdBy's batches (their owner markers, see ownerKey), so its cost is
// that key's own, and a record that cannot be read as a batch is left
// out, not an error for every key. Two creates at once may both pass.
// Batches created before the markers existed are not counted.
func (s *Store) Unfinished(ctx context.Context, createdBy string) (int, error) {
	prefix := ownerPrefix(createdBy)
	lister, err := s.batches.ListKeysFiltered(ctx, prefix+"*")
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var ids []string
	for k := range lister.Keys() {
		ids = append(ids, strings.TrimPrefix(k, prefix))
	}
	n := 0
	for _, id := range ids {
		e, err := s.batches.Get(ctx, recordKey(id))
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // its creation failed after the marker; deactivate removes both
		}
		if err != nil {
			return 0, err
		}
		var rec Record
		if json.Unmarshal(e.Value(), &rec) != nil {
			continue
		}
		if !schema.BatchDone(rec.Batch.Status) {
			n++
		}
	}
	return n, nil
}

// deactivate removes batch id's active marker and its owner marker.
func (s *Store) deactivate(ctx context.Context, id string) error {
	lister, err := s.batches.ListKeysFiltered(ctx, "owner.*."+id)
	if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
		return err
	}
	if err == nil {
		for k := range lister.Keys() {
			if err := s.batches.Delete(ctx, k); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
				return err
			}
		}
	}
	err = s.batches.Delete(ctx, activeKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil
	}
	return err
}

// Batches returns up to limit of the batches who sees (keys.Caller.Sees)
// created before the batch after (all when after is ""), newest first, and
// whether there are more of them.
func (s *Store) Batches(ctx context.Context, who keys.Caller, after string, limit int) ([]schema.Batch, bool, error) {
	lister, err := s.batches.ListKeysFiltered(ctx, "b.*")
	if err != nil {
		return nil, false, err
	}
	var ids []string
	for k := range lister.Keys() {
		ids = append(ids, strings.TrimPrefix(k, "b."))
	}
	slices.SortFunc(ids, func(a, b string) int { return strings.Compare(b, a) }) // newest first
	if after != "" {
		i, _ := slices.BinarySearchFunc(ids, after, func(a, b string) int { return strings.Compare(b, a) })
		if i < len(ids) && ids[i] == after {
			i++
		}
		ids = ids[i:]
	}
	var out []schema.Batch
	for _, id := range ids {
		rec, _, err := s.Batch(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, false, err
		}
		if !who.Sees(rec.CreatedBy) {
			continue
		}
		if len(out) == limit {
			return out, true, nil
		}
		out = append(out, rec.Batch)
	}
	return out, false, nil
}

// Cancel moves a batch that is validating or running to cancelling, for
// who; its runner then stops it. A batch already cancelling or cancelled
// is returned as it is; ErrNotCancellable for one in another state;
// ErrNotFound for one who does not see (keys.Caller.Sees), as for a
// missing one.
func (s *Store) Cancel(ctx context.Context, who keys.Caller, id string, now time.Time) (*Record, error) {
	rec, err := s.Update(ctx, id, func(r *Record) error {
		if !who.Sees(r.CreatedBy) {
			return ErrNotFound
		}
		switch r.Batch.Status {
		case schema.BatchValidating, schema.BatchInProgress:
			r.Batch.Status = schema.BatchCancelling
			r.Batch.CancellingAt = unix(now)
			return nil
		case schema.BatchCancelling, schema.BatchCancelled:
			return errUnchanged
		}
		return ErrNotCancellable
	})
	if errors.Is(err, ErrNotFound) {
		return nil, err // nothing of another's batch leaves here
	}
	return rec, err
}

// ErrNotCancellable is Cancel's error for a batch that is finalizing or done.
var ErrNotCancellable = errors.New("batch cannot be cancelled")

var errUnchanged = errors.New("unchanged")

// IsUnchanged reports Update's result for a mutation that had nothing to do.
func IsUnchanged(err error) bool { return errors.Is(err, errUnchanged) }

func unix(t time.Time) *int64 {
	v := t.Unix()
	return &v
}

// readAll returns an object's bytes.
func (s *Store) readAll(ctx context.Context, name string) ([]byte, error) {
	data, err := s.files.GetBytes(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, ErrNotFound
	}
	return data, err
}
