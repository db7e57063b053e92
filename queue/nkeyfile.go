package queue

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/nats-io/nkeys"
)

// SeedFileName is the file under the data dir where `serve` keeps the nkey
// user seed that other programs present to its embedded NATS port.
const SeedFileName = "nats-user.nk"

// LoadOrCreateUserSeed returns the public key of the nkey user whose seed is
// in path, generating the seed (mode 0600) when the file does not exist. A
// file that others may read (group or world permission bits) is refused, as
// is one that holds no user seed; the seed itself never reaches an error.
// created reports whether this call wrote the file.
func LoadOrCreateUserSeed(path string) (publicKey string, created bool, err error) {
	pub, err := readUserSeed(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return pub, false, err
	}
	kp, err := nkeys.CreateUser()
	if err != nil {
		return "", false, fmt.Errorf("generate an nkey user: %w", err)
	}
	defer kp.Wipe()
	seed, err := kp.Seed()
	if err != nil {
		return "", false, fmt.Errorf("generate an nkey user: %w", err)
	}
	defer clear(seed)
	// Written beside path and linked into place: a crash leaves no half
	// file, and a file another process linked first wins.
	tmp, err := os.CreateTemp(filepath.Dir(path), ".nats-user-*.tmp") // mode 0600
	if err != nil {
		return "", false, fmt.Errorf("write the NATS nkey seed: %w", err)
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(append(seed, '\n'))
	err = errors.Join(err, tmp.Sync(), tmp.Close())
	if err != nil {
		return "", false, fmt.Errorf("write the NATS nkey seed %s: %w", tmp.Name(), err)
	}
	if err := os.Link(tmp.Name(), path); errors.Is(err, fs.ErrExist) {
		pub, err := readUserSeed(path)
		return pub, false, err
	} else if err != nil {
		return "", false, fmt.Errorf("write the NATS nkey seed: %w", err)
	}
	pub, err = kp.PublicKey()
	return pub, err == nil, err
}

// readUserSeed checks path's mode and reads the public key of its user seed.
func readUserSeed(path string) (string, error) {
	info, err := os.Lstat(path)
	if err != nil {
		return "", err
	}
	if !info.Mode().IsRegular() {
		return "", fmt.Errorf("NATS nkey seed %s is not a regular file", path)
	}
	if perm := info.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("NATS nkey seed %s has mode %04o, which lets others read it: run `chmod 600 %s` (or delete it to generate a new seed, which every client must then be given)", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	defer clear(data)
	if err := checkUserSeed(data); err != nil {
		return "", fmt.Errorf("NATS nkey seed %s: %w (delete it to generate a new one)", path, err)
	}
	kp, _ := nkeys.ParseDecoratedNKey(data)
	defer kp.Wipe()
	return kp.PublicKey()
}
