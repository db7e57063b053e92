package queue_test

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/laas-bridge/laas-bridge/queue"
)

// TestLoadOrCreateUserSeed: the first call writes a user seed with mode
// 0600; later calls read the same key; a file others may read, or one that
// holds no user seed, is refused without showing what it holds.
func TestLoadOrCreateUserSeed(t *testing.T) {
	path := filepath.Join(t.TempDir(), queue.SeedFileName)
	pub, created, err := queue.LoadOrCreateUserSeed(path)
	if err != nil || !created || !nkeys.IsValidPublicUserKey(pub) {
		t.Fatalf("first call = %q, created %v, %v; want a new user key", pub, created, err)
	}
	info, err := os.Stat(path)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("seed file: %v, mode %v; want 0600", err, info.Mode())
	}
	seed, _ := os.ReadFile(path)
	kp, err := nkeys.ParseDecoratedNKey(seed)
	if err != nil {
		t.Fatalf("the file holds no seed nats.go can read: %v", err)
	}
	if got, _ := kp.PublicKey(); got != pub {
		t.Errorf("the file's key is %s, the call returned %s", got, pub)
	}
	again, created, err := queue.LoadOrCreateUserSeed(path)
	if err != nil || created || again != pub {
		t.Fatalf("second call = %q, created %v, %v; want %q reused", again, created, err, pub)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".nats-user-*")); len(left) != 0 {
		t.Errorf("temp files left: %v", left)
	}

	for _, mode := range []struct {
		perm os.FileMode
		text string
	}{{0o640, "0640"}, {0o604, "0604"}, {0o644, "0644"}} {
		if err := os.Chmod(path, mode.perm); err != nil {
			t.Fatal(err)
		}
		_, _, err := queue.LoadOrCreateUserSeed(path)
		want := "NATS nkey seed " + path + " has mode " + mode.text + ", which lets others read it: run `chmod 600 " + path + "`"
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("mode %s: error = %v, want it to start with %q", mode.text, err, want)
		}
		if err != nil && strings.Contains(err.Error(), strings.TrimSpace(string(seed))) {
			t.Errorf("the error shows the seed: %v", err)
		}
	}
	if err := os.WriteFile(path, []byte("SAgarbage-not-a-user\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := queue.LoadOrCreateUserSeed(path); err == nil || strings.Contains(err.Error(), "SAgarbage") ||
		!strings.HasSuffix(err.Error(), "(delete it to generate a new one)") {
		t.Errorf("garbage seed: error = %v, want a refusal that does not quote the file", err)
	}
}

// TestStartEmbeddedNKeys: with NKeys, the listening port takes only those
// users; an anonymous client and another user are refused, and in-process
// connections need no credentials.
func TestStartEmbeddedNKeys(t *testing.T) {
	seedFile := filepath.Join(t.TempDir(), queue.SeedFileName)
	pub, _, err := queue.LoadOrCreateUserSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", NKeys: []string{pub}})
	if err != nil {
		t.Fatalf("StartEmbedded: %v", err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	log := slog.New(slog.DiscardHandler)

	opts, err := queue.Identity{NKeySeedFile: seedFile}.Options()
	if err != nil {
		t.Fatal(err)
	}
	nc, err := queue.Connect(srv.ClientURL(), "with-seed", log, opts...)
	if err != nil {
		t.Fatalf("Connect with the seed: %v", err)
	}
	nc.Close()

	other, _ := newUserSeed(t)
	otherOpts, _ := queue.Identity{NKeySeedFile: writeFile(t, t.TempDir(), "other.nk", other)}.Options()
	for name, opts := range map[string][]nats.Option{"anonymous": nil, "another user": otherOpts} {
		nc, err := queue.Connect(srv.ClientURL(), name, log, opts...)
		if nc != nil {
			nc.Close()
		}
		if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("%s: Connect error = %v, want an authorization violation", name, err)
		}
	}
	ip, err := queue.ConnectEmbedded(srv, "in-process", log)
	if err != nil {
		t.Fatalf("ConnectEmbedded: %v", err)
	}
	ip.Close()

	if _, err := queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", NKeys: []string{"UNOTAKEY"}}); err == nil ||
		err.Error() != `embedded NATS: "UNOTAKEY" is not an nkey user's public key` {
		t.Errorf("a bad key: StartEmbedded error = %v", err)
	}
}
