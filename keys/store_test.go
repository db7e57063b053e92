package keys_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

func testContext(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// openStore opens a Store on its own connection to q's server.
func openStore(t *testing.T, q *queuetest.Queue, log *slog.Logger) *keys.Store {
	t.Helper()
	js, err := jetstream.New(q.Connect(t))
	if err != nil {
		t.Fatal(err)
	}
	s, err := keys.Open(testContext(t), js, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// eventually polls cond every 5 ms for up to 5 s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after 5s: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestStoreGenerate: a generated key is "sk-" and 32 random bytes, usable
// at once on the same store, stored under its hash only (the secret is
// nowhere in the bucket), with LiteLLM's key_name.
func TestStoreGenerate(t *testing.T) {
	q := queuetest.Start(t, queue.Config{Memory: true})
	s := openStore(t, q, discard())
	ctx := testContext(t)
	secret, k, err := s.Generate(ctx, "", keys.Params{KeyAlias: keys.Of("app-a"), Models: keys.Of([]string{"m1"}), RPMLimit: keys.Of(int64(60))})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(secret, "sk-") || len(secret) != 3+43 {
		t.Errorf("secret %d chars; want sk- and 43 (32 bytes, base64url)", len(secret))
	}
	if k.Token != keys.Hash(secret) || k.KeyName != "sk-..."+secret[len(secret)-4:] || k.KeyAlias != "app-a" || *k.RPMLimit != 60 || !slices.Equal(k.Models, []string{"m1"}) {
		t.Errorf("key %+v", k)
	}
	got, ok := s.Lookup(secret)
	if !ok || got.Token != k.Token {
		t.Fatalf("Lookup right after Generate = %v, %v", got, ok)
	}
	if _, ok := s.Lookup(k.Token); ok {
		t.Error("Lookup(token) found the key: a token must not work as a secret")
	}
	kv, err := q.JS.KeyValue(ctx, schema.BucketKeys)
	if err != nil {
		t.Fatal(err)
	}
	e, err := kv.Get(ctx, k.Token)
	if err != nil {
		t.Fatalf("bucket entry under the token: %v", err)
	}
	if bytes.Contains(e.Value(), []byte(secret)) || bytes.Contains(e.Value(), []byte(secret[3:])) {
		t.Error("the bucket holds the secret")
	}
	other, _, err := s.Generate(ctx, "", keys.Params{})
	if err != nil || other == secret {
		t.Errorf("second key %v: a fresh secret each time", err)
	}
}

// TestStoreChosenSecret: LiteLLM's "key" imports an existing secret; a
// malformed or taken one is a 400 naming "key".
func TestStoreChosenSecret(t *testing.T) {
	q := queuetest.Start(t, queue.Config{Memory: true})
	s := openStore(t, q, discard())
	ctx := testContext(t)
	const chosen = "sk-moved-from-litellm-0001"
	secret, _, err := s.Generate(ctx, chosen, keys.Params{})
	if err != nil || secret != chosen {
		t.Fatalf("Generate(chosen) = %q, %v", secret, err)
	}
	if _, ok := s.Lookup(chosen); !ok {
		t.Error("the chosen key does not work")
	}
	for _, bad := range []string{chosen, "sk-short", "pk-moved-from-litellm-0001", "sk-has space in it-00000"} {
		_, _, err := s.Generate(ctx, bad, keys.Params{})
		var e *schema.Error
		if !errors.As(err, &e) || e.Status != 400 || e.Param != "key" {
			t.Errorf("Generate(%q) = %v; want 400 naming key", bad, err)
		}
	}
}

// TestStoreUpdate: a field left out keeps its value, null removes it, a
// value replaces it; a duration sets the expiry from now.
func TestStoreUpdate(t *testing.T) {
	q := queuetest.Start(t, queue.Config{Memory: true})
	s := openStore(t, q, discard())
	ctx := testContext(t)
	secret, k, err := s.Generate(ctx, "", keys.Params{KeyAlias: keys.Of("a"), RPMLimit: keys.Of(int64(60)), TPMLimit: keys.Of(int64(1000)), Duration: keys.Of("1h")})
	if err != nil {
		t.Fatal(err)
	}
	if k.Expires == nil || k.Expires.Sub(k.CreatedAt) != time.Hour {
		t.Fatalf("expires %v, created %v; want an hour later", k.Expires, k.CreatedAt)
	}
	u, err := s.Update(ctx, k.Token, keys.Params{RPMLimit: keys.Field[int64]{Set: true}, TPMLimit: keys.Of(int64(5)), Duration: keys.Field[string]{Set: true}, Blocked: keys.Of(true)})
	if err != nil {
		t.Fatal(err)
	}
	if u.KeyAlias != "a" || u.RPMLimit != nil || u.TPMLimit == nil || *u.TPMLimit != 5 || u.Expires != nil || !u.Blocked || !u.CreatedAt.Equal(k.CreatedAt) {
		t.Errorf("updated %+v", u)
	}
	if got, _ := s.Lookup(secret); got == nil || !got.Blocked {
		t.Errorf("Lookup right after Update = %+v; want it blocked", got)
	}
	stored, err := s.Get(ctx, k.Token)
	if err != nil || !stored.Blocked || stored.RPMLimit != nil {
		t.Errorf("Get = %+v, %v", stored, err)
	}
	if _, err := s.Update(ctx, strings.Repeat("0", 64), keys.Params{}); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("Update(unknown) = %v; want ErrNotFound", err)
	}
}

// TestStoreDelete: deleting names the missing keys and then deletes none;
// otherwise all, at once in this store.
func TestStoreDelete(t *testing.T) {
	q := queuetest.Start(t, queue.Config{Memory: true})
	s := openStore(t, q, discard())
	ctx := testContext(t)
	a, ka, _ := s.Generate(ctx, "", keys.Params{})
	b, kb, _ := s.Generate(ctx, "", keys.Params{})
	unknown := strings.Repeat("a", 64)
	missing, err := s.Delete(ctx, []string{ka.Token, unknown})
	if err != nil || !slices.Equal(missing, []string{unknown}) {
		t.Fatalf("Delete with a missing key = %v, %v", missing, err)
	}
	if _, ok := s.Lookup(a); !ok {
		t.Fatal("a key was deleted although another was missing")
	}
	if missing, err := s.Delete(ctx, []string{ka.Token, kb.Token}); err != nil || missing != nil {
		t.Fatalf("Delete = %v, %v", missing, err)
	}
	for _, secret := range []string{a, b} {
		if _, ok := s.Lookup(secret); ok {
			t.Error("a deleted key still works on the store that deleted it")
		}
	}
	if _, err := s.Get(ctx, ka.Token); !errors.Is(err, keys.ErrNotFound) {
		t.Errorf("Get(deleted) = %v", err)
	}
	if n := len(s.List()); n != 0 {
		t.Errorf("List has %d keys after deleting both", n)
	}
}

// TestStoreWatchAcrossStores: a key generated, changed or deleted through
// one store (one gateway) takes effect in another on the same NATS, by the
// watch; and a store opened later loads the keys there are, deleted ones
// not.
func TestStoreWatchAcrossStores(t *testing.T) {
	q := queuetest.Start(t, queue.Config{Memory: true})
	a, b := openStore(t, q, discard()), openStore(t, q, discard())
	ctx := testContext(t)
	secret, k, err := a.Generate(ctx, "", keys.Params{RPMLimit: keys.Of(int64(60))})
	if err != nil {
		t.Fatal(err)
	}
	eventually(t, "the other store never saw the new key", func() bool { _, ok := b.Lookup(secret); return ok })
	if _, err := b.Update(ctx, k.Token, keys.Params{RPMLimit: keys.Of(int64(7))}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the first store never saw the change", func() bool {
		got, ok := a.Lookup(secret)
		return ok && got.RPMLimit != nil && *got.RPMLimit == 7
	})
	gone, kg, _ := a.Generate(ctx, "", keys.Params{})
	if _, err := a.Delete(ctx, []string{kg.Token}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the other store never saw the key created", func() bool { _, ok := b.ByToken(k.Token); return ok })
	eventually(t, "the other store still takes a deleted key", func() bool { _, ok := b.Lookup(gone); return !ok })
	late := openStore(t, q, discard())
	if _, ok := late.Lookup(secret); !ok {
		t.Error("a store opened later does not know an existing key")
	}
	if _, ok := late.Lookup(gone); ok {
		t.Error("a store opened later knows a deleted key")
	}
	if n := len(late.List()); n != 1 {
		t.Errorf("List on a store opened later: %d keys, want 1", n)
	}
}

// TestStoreLogsNoSecret: generating, updating, looking up and deleting
// keys logs no secret.
func TestStoreLogsNoSecret(t *testing.T) {
	q := queuetest.Start(t, queue.Config{Memory: true})
	var logs bytes.Buffer
	s := openStore(t, q, slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	ctx := testContext(t)
	secret, k, err := s.Generate(ctx, "", keys.Params{KeyAlias: keys.Of("app")})
	if err != nil {
		t.Fatal(err)
	}
	s.Lookup(secret)
	if _, err := s.Update(ctx, k.Token, keys.Params{Blocked: keys.Of(true)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Delete(ctx, []string{k.Token}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "virtual key deleted") {
		t.Fatalf("no log lines captured: %q", logs.String())
	}
	if strings.Contains(logs.String(), secret[3:]) {
		t.Errorf("a log line holds the secret: %s", logs.String())
	}
}

// openOn opens a Store on connection nc.
func openOn(ctx context.Context, nc *nats.Conn) (*keys.Store, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	return keys.Open(ctx, js, discard())
}
