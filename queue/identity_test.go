package queue_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"

	"github.com/laas-bridge/laas-bridge/queue"
)

// startAuthServer runs a NATS server on a free loopback port with opts'
// auth settings; it is stopped at cleanup.
func startAuthServer(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start within 10s")
	}
	return s
}

// writeFile writes data to name in dir (mode 0600) and returns its path.
func writeFile(t *testing.T, dir, name string, data []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// newUserSeed makes an nkey user and returns its seed and public key.
func newUserSeed(t *testing.T) (seed []byte, pub string) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, _ = kp.Seed()
	pub, _ = kp.PublicKey()
	return seed, pub
}

// connectAs connects to url presenting id and returns the error (nil on
// success) and what was logged; the connection is closed.
func connectAs(t *testing.T, url string, id queue.Identity) (error, string) {
	t.Helper()
	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))
	opts, err := id.Options()
	if err != nil {
		t.Fatalf("Options: %v", err)
	}
	nc, err := queue.Connect(url, "identity-test", log, opts...)
	if err == nil {
		nc.Close()
	}
	return err, logs.String()
}

// noSecret fails when secret is in the error or the logs.
func noSecret(t *testing.T, err error, logs, secret string) {
	t.Helper()
	if err != nil && strings.Contains(err.Error(), secret) {
		t.Errorf("the error shows the secret: %v", err)
	}
	if strings.Contains(logs, secret) {
		t.Errorf("the logs show the secret:\n%s", logs)
	}
}

const refusedHint = "(the server did not accept this client: give it an identity the server knows, with NATS_CREDS, NATS_NKEY_SEED, or user:password in NATS_URL, and NATS_CERT/NATS_KEY for a client certificate)"

func TestConnectNKeyUser(t *testing.T) {
	dir := t.TempDir()
	seed, pub := newUserSeed(t)
	s := startAuthServer(t, &server.Options{Nkeys: []*server.NkeyUser{{Nkey: pub}}})
	other, _ := newUserSeed(t)

	t.Run("its seed", func(t *testing.T) {
		err, logs := connectAs(t, s.ClientURL(), queue.Identity{NKeySeedFile: writeFile(t, dir, "user.nk", seed)})
		if err != nil {
			t.Fatalf("Connect with the user's seed: %v", err)
		}
		noSecret(t, err, logs, string(seed))
	})
	for _, tc := range []struct {
		name string
		id   queue.Identity
	}{
		{"no identity", queue.Identity{}},
		{"another user's seed", queue.Identity{NKeySeedFile: writeFile(t, dir, "other.nk", other)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err, logs := connectAs(t, s.ClientURL(), tc.id)
			want := "connect to NATS at " + s.ClientURL() + ": nats: Authorization Violation " + refusedHint
			if err == nil || err.Error() != want {
				t.Fatalf("Connect error = %v, want %q", err, want)
			}
			noSecret(t, err, logs, string(other))
		})
	}
}

func TestConnectUserPassword(t *testing.T) {
	const password = "pw-s3cret-9f2c"
	s := startAuthServer(t, &server.Options{Users: []*server.User{{Username: "app", Password: password}}})
	host := strings.TrimPrefix(s.ClientURL(), "nats://")

	err, logs := connectAs(t, "nats://app:"+password+"@"+host, queue.Identity{})
	if err != nil {
		t.Fatalf("Connect with the password: %v", err)
	}
	noSecret(t, err, logs, password)

	for _, tc := range []struct{ name, url, shown string }{
		{"no password", "nats://" + host, "nats://" + host},
		{"wrong password", "nats://app:" + password + "-wrong@" + host, "nats://[redacted]@" + host},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err, logs := connectAs(t, tc.url, queue.Identity{})
			want := "connect to NATS at " + tc.shown + ": nats: Authorization Violation " + refusedHint
			if err == nil || err.Error() != want {
				t.Fatalf("Connect error = %v, want %q", err, want)
			}
			noSecret(t, err, logs, password)
		})
	}
}

// testPKI is a CA and the server's and a client's certificates, as PEM
// files in a temp dir.
type testPKI struct {
	caFile, serverCert, serverKey, clientCert, clientKey string
}

func newTestPKI(t *testing.T) testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leaf := func(name string, serial int64, usage x509.ExtKeyUsage) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, _ := x509.MarshalECPrivateKey(key)
		return writeFile(t, dir, name+".pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
			writeFile(t, dir, name+"-key.pem", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}))
	}
	p := testPKI{caFile: writeFile(t, dir, "ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))}
	p.serverCert, p.serverKey = leaf("server", 2, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = leaf("client", 3, x509.ExtKeyUsageClientAuth)
	return p
}

// TestConnectMutualTLS: a server that requires a client certificate signed
// by its CA takes a client with NATS_CA, NATS_CERT and NATS_KEY, and
// refuses one without the certificate; a client without NATS_CA is told to
// set it.
func TestConnectMutualTLS(t *testing.T) {
	p := newTestPKI(t)
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.serverCert, KeyFile: p.serverKey, CaFile: p.caFile, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	s := startAuthServer(t, &server.Options{TLSConfig: tc, TLSVerify: true, TLSTimeout: 2})
	url := s.ClientURL() // tls://127.0.0.1:port

	err, _ = connectAs(t, url, queue.Identity{CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey})
	if err != nil {
		t.Fatalf("Connect with the CA and a client certificate: %v", err)
	}

	t.Run("no client certificate", func(t *testing.T) {
		// The server refuses in the handshake; whether the client reads
		// its alert or finds the connection closed first depends on timing.
		err, _ := connectAs(t, url, queue.Identity{CAFile: p.caFile})
		prefix := "connect to NATS at " + url + ": "
		if err == nil || !strings.HasPrefix(err.Error(), prefix) ||
			!strings.Contains(err.Error(), "tls: certificate required") && !strings.Contains(err.Error(), "tls error: connection closed by remote") {
			t.Fatalf("Connect error = %v, want %q and the server's certificate refusal or the closed TLS connection", err, prefix)
		}
	})
	t.Run("no CA", func(t *testing.T) {
		err, _ := connectAs(t, url, queue.Identity{CertFile: p.clientCert, KeyFile: p.clientKey})
		var unknown x509.UnknownAuthorityError
		if !errors.As(err, &unknown) || !strings.HasSuffix(err.Error(), " (set NATS_CA to the CA bundle that signed the server's certificate)") {
			t.Fatalf("Connect error = %v, want an unknown authority and the NATS_CA hint", err)
		}
	})
}

// TestIdentityValidate: every problem is reported at once, each naming its
// variable and path, and no message shows a file's secret.
func TestIdentityValidate(t *testing.T) {
	dir := t.TempDir()
	p := newTestPKI(t)
	seed, _ := newUserSeed(t)
	seedFile := writeFile(t, dir, "user.nk", seed)
	accountKP, _ := nkeys.CreateAccount()
	accountSeed, _ := accountKP.Seed()
	accountFile := writeFile(t, dir, "account.nk", accountSeed)
	userKP, _ := nkeys.CreateUser()
	userPub, _ := userKP.PublicKey()
	userSeed, _ := userKP.Seed()
	userJWT, err := jwt.NewUserClaims(userPub).Encode(accountKP)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(userJWT, userSeed)
	if err != nil {
		t.Fatal(err)
	}
	credsFile := writeFile(t, dir, "user.creds", creds)
	seedOnlyCreds := writeFile(t, dir, "seed-only.creds", userSeed)
	garbage := writeFile(t, dir, "garbage", []byte("not a key\n"))
	missing := filepath.Join(dir, "missing")

	for _, tc := range []struct {
		name string
		id   queue.Identity
		want []string // the joined error's lines; nil: valid
		opts int
	}{
		{"zero", queue.Identity{}, nil, 0},
		{"nkey seed", queue.Identity{NKeySeedFile: seedFile}, nil, 1},
		{"creds", queue.Identity{CredsFile: credsFile}, nil, 1},
		{"mutual TLS", queue.Identity{CAFile: p.caFile, CertFile: p.clientCert, KeyFile: p.clientKey}, nil, 2},
		{"CA only", queue.Identity{CAFile: p.caFile}, nil, 1},
		{"creds and seed", queue.Identity{CredsFile: credsFile, NKeySeedFile: seedFile},
			[]string{"NATS_CREDS and NATS_NKEY_SEED are both set: a connection signs in as one user, so set one"}, 0},
		{"cert without key", queue.Identity{CertFile: p.clientCert},
			[]string{"NATS_CERT is set without NATS_KEY: a client certificate needs its private key"}, 0},
		{"key without cert", queue.Identity{KeyFile: p.clientKey},
			[]string{"NATS_KEY is set without NATS_CERT: a private key needs its client certificate"}, 0},
		{"account seed", queue.Identity{NKeySeedFile: accountFile},
			[]string{"NATS_NKEY_SEED " + accountFile + ": the seed is not a user's (it must start with SU)"}, 0},
		{"creds without a JWT", queue.Identity{CredsFile: seedOnlyCreds},
			[]string{"NATS_CREDS " + seedOnlyCreds + ": not a creds file: no user JWT in it (write one with `nsc generate creds`)"}, 0},
		{"key that is not the cert's", queue.Identity{CertFile: p.clientCert, KeyFile: p.serverKey},
			[]string{"NATS_CERT " + p.clientCert + " and NATS_KEY " + p.serverKey + ": tls: private key does not match public key"}, 0},
		{
			"everything wrong at once",
			queue.Identity{CredsFile: missing, NKeySeedFile: garbage, CAFile: garbage, CertFile: p.clientCert},
			[]string{
				"NATS_CREDS and NATS_NKEY_SEED are both set: a connection signs in as one user, so set one",
				"NATS_CREDS: open " + missing + ": no such file or directory",
				"NATS_NKEY_SEED " + garbage + ": no nkey seed in it (a line starting with SU, as `nk -gen user` writes)",
				"NATS_CA " + garbage + ": no PEM certificate in it",
				"NATS_CERT is set without NATS_KEY: a client certificate needs its private key",
			}, 0,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.id.Validate()
			if tc.want == nil {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				opts, err := tc.id.Options()
				if err != nil || len(opts) != tc.opts {
					t.Errorf("Options = %d options, %v; want %d", len(opts), err, tc.opts)
				}
				return
			}
			if err == nil {
				t.Fatal("Validate = nil, want an error")
			}
			if got, want := err.Error(), strings.Join(tc.want, "\n"); got != want {
				t.Errorf("Validate =\n%s\nwant\n%s", got, want)
			}
			if _, oerr := tc.id.Options(); oerr == nil || oerr.Error() != err.Error() {
				t.Errorf("Options error = %v, want Validate's", oerr)
			}
			for _, secret := range [][]byte{seed, accountSeed, userSeed} {
				if strings.Contains(err.Error(), string(secret)) {
					t.Errorf("the error shows a seed: %v", err)
				}
			}
		})
	}
}

func TestIdentityFromEnv(t *testing.T) {
	env := map[string]string{"NATS_CREDS": " /c ", "NATS_NKEY_SEED": "/n", "NATS_CA": "/ca", "NATS_CERT": "/cert", "NATS_KEY": "/key"}
	got := queue.IdentityFromEnv(func(k string) string { return env[k] })
	want := queue.Identity{CredsFile: "/c", NKeySeedFile: "/n", CAFile: "/ca", CertFile: "/cert", KeyFile: "/key"}
	if got != want {
		t.Errorf("IdentityFromEnv = %+v, want %+v", got, want)
	}
}
