package keys

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// Store keeps the virtual keys in the JetStream KV bucket
// schema.BucketKeys (provisioned by queue.Ensure) and a copy of them in
// memory, fed by one watch of the bucket, so Lookup is a map read and a
// key generated, changed or deleted by any gateway takes effect in every
// other as fast as NATS delivers the watch (milliseconds on one cluster).
// A Store's own writes take effect in its copy before they return.
//
// Entry: key name = Token, value = the Key as JSON. The secret is never
// stored, logged or returned, except once by Generate.
//
// Its methods are safe for concurrent use. Keys returned are shared: read
// them, never change them.
type Store struct {
	kv  jetstream.KeyValue
	log *slog.Logger
	now func() time.Time

	mu   sync.RWMutex
	keys map[string]entry // by token; a deleted key stays as a tombstone

	stopWatch func() // ends the bucket's watch (queue.FollowBucket)
}

// entry is a key as last known and the bucket revision it was read at;
// key nil: deleted.
type entry struct {
	key *Key
	rev uint64
}

// opTimeout bounds one bucket operation when ctx has no deadline.
const opTimeout = 10 * time.Second

// ErrNotFound is returned by Get and Update for a key that does not exist.
var ErrNotFound = errors.New("key not found")

// Open returns the store of the bucket once its current keys are loaded,
// and keeps them current (a watch, started again after every reconnect)
// until Close.
func Open(ctx context.Context, js jetstream.JetStream, log *slog.Logger) (*Store, error) {
	kv, err := js.KeyValue(ctx, schema.BucketKeys)
	if err != nil {
		return nil, fmt.Errorf("keys bucket %s: %w", schema.BucketKeys, err)
	}
	s := &Store{kv: kv, log: log, now: time.Now, keys: map[string]entry{}}
	s.stopWatch, err = queue.FollowBucket(ctx, kv, js.Conn(), func(e jetstream.KeyValueEntry, _ bool) { s.apply(e) }, func(err error) {
		s.log.Warn("keys: cannot watch the keys bucket; retrying", "error", err)
	})
	if err != nil {
		return nil, fmt.Errorf("keys bucket %s: %w", schema.BucketKeys, err)
	}
	return s, nil
}

// Close stops the watch; Lookup keeps answering from the last copy.
func (s *Store) Close() { s.stopWatch() }

// Lookup finds the key whose secret this is: a hash and a map read. It
// returns blocked and expired keys too (see Key.Usable).
func (s *Store) Lookup(secret string) (*Key, bool) {
	if !strings.HasPrefix(secret, SecretPrefix) {
		return nil, false
	}
	return s.ByToken(Hash(secret))
}

// ByToken finds a key by its token (the secret's hash), from the copy.
func (s *Store) ByToken(token string) (*Key, bool) {
	s.mu.RLock()
	e := s.keys[token]
	s.mu.RUnlock()
	return e.key, e.key != nil
}

// List returns every key in the copy, oldest first.
func (s *Store) List() []*Key {
	s.mu.RLock()
	out := make([]*Key, 0, len(s.keys))
	for _, e := range s.keys {
		if e.key != nil {
			out = append(out, e.key)
		}
	}
	s.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Key) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return strings.Compare(a.Token, b.Token)
	})
	return out
}

// Get reads a key from the bucket itself (not the copy); ErrNotFound when
// there is none.
func (s *Store) Get(ctx context.Context, token string) (*Key, error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	k, _, err := s.read(ctx, token)
	return k, err
}

// Generate makes a key with p's settings: a fresh secret ("sk-" and 32
// random bytes), or the chosen one (LiteLLM's "key", for moving existing
// keys over: "sk-" and at least 16 more characters). It returns the
// secret, which is never shown again, and the key as stored.
func (s *Store) Generate(ctx context.Context, chosen string, p Params) (secret string, k *Key, err error) {
	if err := p.Validate(); err != nil {
		return "", nil, err
	}
	secret = chosen
	if secret == "" {
		secret = NewSecret()
	} else if !validSecret(secret) {
		return "", nil, schema.Invalid("key", schema.CodeInvalidValue, "A chosen key must be 'sk-' and 16 to 200 more of [A-Za-z0-9_-].")
	}
	now := s.now().UTC()
	k = &Key{Token: Hash(secret), KeyName: abbreviate(secret), Models: []string{}, CreatedAt: now, UpdatedAt: now}
	p.apply(k, now)
	data, err := json.Marshal(k)
	if err != nil {
		return "", nil, fmt.Errorf("encode key: %w", err)
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	rev, err := s.kv.Create(ctx, k.Token, data)
	if errors.Is(err, jetstream.ErrKeyExists) {
		return "", nil, &schema.Error{Status: http.StatusBadRequest, Type: schema.TypeInvalidRequest, Code: schema.CodeInvalidValue, Param: "key",
			Message: "A key with this value exists already; choose another or leave 'key' out."}
	}
	if err != nil {
		return "", nil, fmt.Errorf("store key: %w", err)
	}
	s.store(k.Token, entry{key: k, rev: rev})
	s.log.Info("virtual key generated", "key", Caller{Key: k}.Alias())
	return secret, k, nil
}

// Update changes the key's settings in p (a compare-and-set, retried when
// another gateway changed the key first) and returns the key as stored;
// ErrNotFound when there is none.
func (s *Store) Update(ctx context.Context, token string, p Params) (*Key, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	for {
		cur, rev, err := s.read(ctx, token)
		if err != nil {
			return nil, err
		}
		k := *cur
		k.Models, k.Metadata = slices.Clone(cur.Models), cur.Metadata
		k.UpdatedAt = s.now().UTC()
		p.apply(&k, k.UpdatedAt)
		data, err := json.Marshal(&k)
		if err != nil {
			return nil, fmt.Errorf("encode key: %w", err)
		}
		next, err := s.kv.Update(ctx, token, data, rev)
		if conflict(err) { // changed since read: again
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("update key: %w", err)
		}
		s.store(token, entry{key: &k, rev: next})
		s.log.Info("virtual key updated", "key", Caller{Key: &k}.Alias())
		return &k, nil
	}
}

// Delete deletes the keys with these tokens. When any does not exist it
// deletes none and returns the missing ones.
func (s *Store) Delete(ctx context.Context, tokens []string) (missing []string, err error) {
	ctx, cancel := withTimeout(ctx)
	defer cancel()
	found := make(map[string]entry, len(tokens))
	for _, t := range tokens {
		k, rev, err := s.read(ctx, t)
		switch {
		case errors.Is(err, ErrNotFound):
			missing = append(missing, t)
		case err != nil:
			return nil, err
		default:
			found[t] = entry{key: k, rev: rev}
		}
	}
	if len(missing) > 0 {
		return missing, nil
	}
	for t, e := range found {
		// A key changed since read is deleted all the same.
		if err := s.kv.Delete(ctx, t); err != nil {
			return nil, fmt.Errorf("delete key: %w", err)
		}
		// The delete marker's revision is above e.rev; the watch brings it.
		s.store(t, entry{rev: e.rev})
		s.log.Info("virtual key deleted", "key", Caller{Key: e.key}.Alias())
	}
	return nil, nil
}

// read gets a key and its revision from the bucket.
func (s *Store) read(ctx context.Context, token string) (*Key, uint64, error) {
	if !validToken(token) {
		return nil, 0, ErrNotFound
	}
	e, err := s.kv.Get(ctx, token)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil, 0, ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("read key: %w", err)
	}
	var k Key
	if err := json.Unmarshal(e.Value(), &k); err != nil {
		return nil, 0, fmt.Errorf("decode key %.12s: %w", token, err)
	}
	return &k, e.Revision(), nil
}

// store records e unless a newer revision is known; a deletion at the same
// revision wins (the delete marker's own revision comes with the watch).
func (s *Store) store(token string, e entry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.keys[token]; ok && (cur.rev > e.rev || cur.rev == e.rev && e.key != nil) {
		return
	}
	s.keys[token] = e
}

var (
	tokenPattern  = regexp.MustCompile(`^[0-9a-f]{64}$`)
	secretPattern = regexp.MustCompile(`^sk-[A-Za-z0-9_-]{16,200}$`)
)

// validToken says whether s has a token's form: 64 lower-case hex digits.
func validToken(s string) bool { return tokenPattern.MatchString(s) }

func conflict(err error) bool {
	return errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists)
}

func validSecret(s string) bool { return secretPattern.MatchString(s) }

// TokenOf reads what a /key/* request names a key by: its secret ("sk-...")
// or its token; ok false for neither.
func TokenOf(keyOrToken string) (token string, ok bool) {
	if strings.HasPrefix(keyOrToken, SecretPrefix) {
		return Hash(keyOrToken), true
	}
	return keyOrToken, validToken(keyOrToken)
}

// abbreviate is LiteLLM's key_name: "sk-...", then the last 4 characters.
func abbreviate(secret string) string { return SecretPrefix + "..." + secret[len(secret)-4:] }

func withTimeout(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, opTimeout)
}
