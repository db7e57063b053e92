package queue

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"
)

// The environment variables that name a client's NATS identity. Every role
// and command that connects to NATS_URL reads them (IdentityFromEnv).
const (
	EnvCreds    = "NATS_CREDS"     // a creds file: user JWT and nkey seed
	EnvNKeySeed = "NATS_NKEY_SEED" // a file holding an nkey user seed
	EnvCA       = "NATS_CA"        // CA bundle (PEM) that signs the server's certificate
	EnvCert     = "NATS_CERT"      // client certificate (PEM) for mutual TLS
	EnvKey      = "NATS_KEY"       // the client certificate's private key (PEM)
)

// Identity is who a NATS client says it is, beyond a user and password in
// NATS_URL (which keeps working): a creds file (decentralised auth: a user
// JWT and its seed), or an nkey seed file; and TLS: a CA to trust and a
// client certificate for mutual TLS. It holds paths only, never a secret;
// nats.go reads the seed again each time it signs the server's challenge.
// The zero Identity adds nothing to a connection.
type Identity struct {
	CredsFile    string // NATS_CREDS
	NKeySeedFile string // NATS_NKEY_SEED
	CAFile       string // NATS_CA
	CertFile     string // NATS_CERT
	KeyFile      string // NATS_KEY
}

// IdentityFromEnv reads an Identity from the NATS_* variables above through
// getenv (os.Getenv); surrounding spaces are dropped.
func IdentityFromEnv(getenv func(string) string) Identity {
	get := func(name string) string { return strings.TrimSpace(getenv(name)) }
	return Identity{CredsFile: get(EnvCreds), NKeySeedFile: get(EnvNKeySeed), CAFile: get(EnvCA), CertFile: get(EnvCert), KeyFile: get(EnvKey)}
}

// Validate reads every file id names and reports every problem at once: a
// creds file and an nkey seed both set (a connection signs in as one user),
// a certificate without its key or a key without its certificate, a file
// that cannot be read or does not hold what its variable says. Messages
// name the variable and the path, never a file's contents.
func (id Identity) Validate() error {
	var errs []error
	if id.CredsFile != "" && id.NKeySeedFile != "" {
		errs = append(errs, fmt.Errorf("%s and %s are both set: a connection signs in as one user, so set one", EnvCreds, EnvNKeySeed))
	}
	if id.CredsFile != "" {
		errs = append(errs, checkSecretFile(EnvCreds, id.CredsFile, checkCreds))
	}
	if id.NKeySeedFile != "" {
		errs = append(errs, checkSecretFile(EnvNKeySeed, id.NKeySeedFile, checkUserSeed))
	}
	if id.CAFile != "" {
		if pem, err := os.ReadFile(id.CAFile); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", EnvCA, err))
		} else if !x509.NewCertPool().AppendCertsFromPEM(pem) {
			errs = append(errs, fmt.Errorf("%s %s: no PEM certificate in it", EnvCA, id.CAFile))
		}
	}
	switch {
	case id.CertFile != "" && id.KeyFile == "":
		errs = append(errs, fmt.Errorf("%s is set without %s: a client certificate needs its private key", EnvCert, EnvKey))
	case id.KeyFile != "" && id.CertFile == "":
		errs = append(errs, fmt.Errorf("%s is set without %s: a private key needs its client certificate", EnvKey, EnvCert))
	case id.CertFile != "":
		if _, err := tls.LoadX509KeyPair(id.CertFile, id.KeyFile); err != nil {
			// tls's errors name the problem, never the key's bytes.
			errs = append(errs, fmt.Errorf("%s %s and %s %s: %w", EnvCert, id.CertFile, EnvKey, id.KeyFile, err))
		}
	}
	return errors.Join(errs...)
}

// checkSecretFile reads path and runs check on its contents, which it then
// overwrites; the error names env and path only.
func checkSecretFile(env, path string, check func([]byte) error) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("%s: %w", env, err) // *PathError: the path, not the contents
	}
	defer clear(data)
	if err := check(data); err != nil {
		return fmt.Errorf("%s %s: %w", env, path, err)
	}
	return nil
}

func checkCreds(data []byte) error {
	if !bytes.Contains(data, []byte("-----BEGIN NATS USER JWT-----")) {
		return errors.New("not a creds file: no user JWT in it (write one with `nsc generate creds`)")
	}
	kp, err := nkeys.ParseDecoratedUserNKey(data)
	if err != nil {
		return errors.New("not a creds file: no nkey user seed in it")
	}
	kp.Wipe()
	return nil
}

func checkUserSeed(data []byte) error {
	kp, err := nkeys.ParseDecoratedNKey(data)
	if err != nil {
		return errors.New("no nkey seed in it (a line starting with SU, as `nk -gen user` writes)")
	}
	defer kp.Wipe()
	if pub, err := kp.PublicKey(); err != nil || !nkeys.IsValidPublicUserKey(pub) {
		return errors.New("the seed is not a user's (it must start with SU)")
	}
	return nil
}

// Options checks id (Validate) and returns the nats.go options that make a
// connection present it. A zero Identity returns none.
func (id Identity) Options() ([]nats.Option, error) {
	if err := id.Validate(); err != nil {
		return nil, err
	}
	var opts []nats.Option
	if id.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(id.CredsFile))
	}
	if id.NKeySeedFile != "" {
		o, err := nats.NkeyOptionFromSeed(id.NKeySeedFile)
		if err != nil {
			return nil, fmt.Errorf("%s %s: %w", EnvNKeySeed, id.NKeySeedFile, err)
		}
		opts = append(opts, o)
	}
	if id.CAFile != "" {
		opts = append(opts, nats.RootCAs(id.CAFile))
	}
	if id.CertFile != "" {
		opts = append(opts, nats.ClientCert(id.CertFile, id.KeyFile))
	}
	return opts, nil
}
