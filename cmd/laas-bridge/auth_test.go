package main

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/laas-bridge/laas-bridge/queue"
)

// requireKey undoes clearEnv's BRIDGE_AUTH=none: the process default.
func requireKey(t *testing.T) {
	t.Helper()
	t.Setenv("BRIDGE_AUTH", "")
	os.Unsetenv("BRIDGE_AUTH")
}

// runFails runs args in-process and returns its error, which must come
// before anything starts.
func runFails(t *testing.T, args ...string) (error, string) {
	t.Helper()
	var out bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := run(ctx, args, &out, &out)
	if err == nil {
		t.Fatalf("laas-bridge %s started", strings.Join(args, " "))
	}
	return err, out.String()
}

// TestAPIRefusesToRunOpen: serve and gateway without BRIDGE_MASTER_KEY
// refuse to start, saying which variable to set and the two ways to run
// open; BRIDGE_AUTH takes "none" and nothing else.
func TestAPIRefusesToRunOpen(t *testing.T) {
	const refusal = "BRIDGE_MASTER_KEY is not set, and `laas-bridge %s` does not serve an API anyone can call: set BRIDGE_MASTER_KEY to a secret (for example the output of `openssl rand -hex 32`) that callers send as their bearer key; or, to run without a key on purpose, set BRIDGE_AUTH=none, or try it with `laas-bridge serve --demo`"
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"serve", []string{"serve", "--config", "testdata/config.yaml", "--listen", "127.0.0.1:0", "--data-dir", "DATA"}},
		{"gateway", []string{"gateway", "--config", "testdata/config.yaml", "--listen", "127.0.0.1:0", "--nats-url", "nats://127.0.0.1:1"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			requireKey(t)
			t.Setenv("LAAS_PROJECT_CODE", "p")
			t.Setenv("LAAS_API_KEY", "k")
			t.Setenv("LAAS_PRESET_HASH", "h")
			data := t.TempDir()
			args := append([]string(nil), tc.args...)
			for i := range args {
				if args[i] == "DATA" {
					args[i] = data
				}
			}
			err, _ := runFails(t, args...)
			if want := strings.Replace(refusal, "%s", tc.name, 1); err.Error() != want {
				t.Errorf("error =\n%s\nwant\n%s", err, want)
			}
			if entries, _ := os.ReadDir(data); len(entries) != 0 {
				t.Errorf("serve wrote %v to its data dir before refusing", entries)
			}
		})
	}
	for _, bad := range []string{"off", "None", "basic", " none"} {
		t.Run("BRIDGE_AUTH="+bad, func(t *testing.T) {
			clearEnv(t)
			t.Setenv("BRIDGE_AUTH", bad)
			err, _ := runFails(t, "serve", "--demo", "--config", "testdata/config.yaml", "--listen", "127.0.0.1:0", "--data-dir", t.TempDir())
			want := `BRIDGE_AUTH="` + bad + `": the only value is none, which lets serve and gateway run without BRIDGE_MASTER_KEY (an API anyone can call); leave it unset to require the key`
			if err.Error() != want {
				t.Errorf("error =\n%s\nwant\n%s", err, want)
			}
		})
	}
}

// TestAPIRunsOpenOnlyWhenAsked: `serve --demo` and BRIDGE_AUTH=none start
// without a key, answer a caller with none, and say why in one warning;
// with a key set, BRIDGE_AUTH=none still requires it.
func TestAPIRunsOpenOnlyWhenAsked(t *testing.T) {
	const warning = `level=WARN msg="BRIDGE_MASTER_KEY is not set: the API accepts any caller" role=serve because=`
	models := func(t *testing.T, in *instance) int {
		t.Helper()
		resp, err := http.Get(in.url + "/v1/models")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	t.Run("--demo", func(t *testing.T) {
		clearEnv(t)
		requireKey(t)
		in := startDemo(t)
		if got := models(t, in); got != http.StatusOK {
			t.Errorf("GET /v1/models without a key: %d, want 200", got)
		}
		if n := strings.Count(in.logs.String(), warning+"--demo\n"); n != 1 {
			t.Errorf("the warning is logged %d times, want once:\n%s", n, in.logs)
		}
	})
	t.Run("BRIDGE_AUTH=none", func(t *testing.T) {
		_, in := serveWithMock(t, 0) // clearEnv: BRIDGE_AUTH=none
		if got := models(t, in); got != http.StatusOK {
			t.Errorf("GET /v1/models without a key: %d, want 200", got)
		}
		if n := strings.Count(in.logs.String(), warning+`"BRIDGE_AUTH=none"`+"\n"); n != 1 {
			t.Errorf("the warning is logged %d times, want once:\n%s", n, in.logs)
		}
	})
	t.Run("BRIDGE_AUTH=none with a key", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("BRIDGE_MASTER_KEY", "sk-auth-test-master")
		in := startDemo(t)
		if got := models(t, in); got != http.StatusUnauthorized {
			t.Errorf("GET /v1/models without the key: %d, want 401", got)
		}
		if strings.Contains(in.logs.String(), "the API accepts any caller") {
			t.Errorf("the open-API warning is logged with a key set:\n%s", in.logs)
		}
	})
}

// TestServeNATSPort: serve opens no NATS port by default; with
// --nats-listen it generates an nkey seed (0600) that signs in there,
// refuses anonymous clients, logs the seed's path (never the seed), and
// keeps the seed across restarts; a seed file others may read stops it.
func TestServeNATSPort(t *testing.T) {
	t.Run("no port by default", func(t *testing.T) {
		clearEnv(t)
		data := t.TempDir()
		in := startRun(t, "serve", "--demo", "--listen", "127.0.0.1:0", "--data-dir", data, "--config", "testdata/config.yaml")
		if !strings.Contains(in.logs.String(), `msg="embedded NATS started" role=serve store=`+filepath.Join(data, "nats")+` listen="none (in-process only; set BRIDGE_NATS_LISTEN to let other programs connect)"`) ||
			strings.Contains(in.logs.String(), "client_url") {
			t.Errorf("logs do not say the embedded NATS listens nowhere:\n%s", in.logs)
		}
		if _, err := os.Stat(filepath.Join(data, queue.SeedFileName)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("seed file without a port: %v, want none", err)
		}
	})

	clearEnv(t)
	data := t.TempDir()
	seedFile := filepath.Join(data, queue.SeedFileName)
	args := []string{"serve", "--demo", "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--data-dir", data, "--config", "testdata/config.yaml"}
	in := startRun(t, args...)
	url, logged := servedNATS(t, in.logs.String())
	if logged != seedFile || !strings.Contains(in.logs.String(), `connect_with="NATS_NKEY_SEED=`+seedFile+` NATS_URL=`+url+`"`) {
		t.Errorf("logs name seed file %q, want %q and an example line:\n%s", logged, seedFile, in.logs)
	}
	info, err := os.Stat(seedFile)
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("seed file: %v %v, want mode 0600", err, info)
	}
	seed, _ := os.ReadFile(seedFile)
	if strings.Contains(in.logs.String(), strings.TrimSpace(string(seed))) {
		t.Errorf("the logs show the seed:\n%s", in.logs)
	}
	connectLogged(t, in.logs.String()) // with the seed
	if nc, err := nats.Connect(url); !errors.Is(err, nats.ErrAuthorization) {
		if nc != nil {
			nc.Close()
		}
		t.Errorf("anonymous connect: %v, want an authorization violation", err)
	}
	in.shutdown(t)

	again := startRun(t, args...)
	connectLogged(t, again.logs.String())
	if now, _ := os.ReadFile(seedFile); !bytes.Equal(now, seed) {
		t.Error("the seed changed on restart")
	}
	again.shutdown(t)

	if err := os.Chmod(seedFile, 0o644); err != nil {
		t.Fatal(err)
	}
	err, _ = runFails(t, args...)
	if want := "NATS nkey seed " + seedFile + " has mode 0644, which lets others read it: run `chmod 600 " + seedFile + "`"; !strings.HasPrefix(err.Error(), want) {
		t.Errorf("error = %v, want it to start with %q", err, want)
	}
}

// TestRolesSignInToNATS: gateway and serve with NATS_URL sign in with
// NATS_NKEY_SEED; without it the server's refusal says what to set, and a
// broken identity stops the process before it connects.
func TestRolesSignInToNATS(t *testing.T) {
	seedFile := filepath.Join(t.TempDir(), queue.SeedFileName)
	pub, _, err := queue.LoadOrCreateUserSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0", NKeys: []string{pub}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	setup := func(t *testing.T) {
		clearEnv(t)
		t.Setenv("NATS_URL", srv.ClientURL())
		t.Setenv("LAAS_PROJECT_CODE", "p")
		t.Setenv("LAAS_API_KEY", "k")
		t.Setenv("LAAS_PRESET_HASH", "h")
		t.Setenv("LAAS_BASE_URL", "http://127.0.0.1:1")
	}
	for _, args := range [][]string{
		{"gateway", "--listen", "127.0.0.1:0", "--config", "testdata/config.yaml"},
		{"serve", "--listen", "127.0.0.1:0", "--config", "testdata/config.yaml", "--data-dir", "DATA"},
	} {
		t.Run(args[0], func(t *testing.T) {
			setup(t)
			args := append([]string(nil), args...)
			if args[len(args)-1] == "DATA" {
				args[len(args)-1] = t.TempDir()
			}
			t.Setenv("NATS_NKEY_SEED", seedFile)
			in := startRun(t, args...)
			if !strings.Contains(in.logs.String(), `msg="connected to NATS" role=`+args[0]+` server=`+srv.ClientURL()) {
				t.Errorf("no connection logged:\n%s", in.logs)
			}
			in.shutdown(t)

			os.Unsetenv("NATS_NKEY_SEED")
			err, _ := runFails(t, args...)
			want := "connect to NATS at " + srv.ClientURL() + ": nats: Authorization Violation (the server did not accept this client: give it an identity the server knows, with NATS_CREDS, NATS_NKEY_SEED, or user:password in NATS_URL, and NATS_CERT/NATS_KEY for a client certificate)"
			if err.Error() != want {
				t.Errorf("without the seed: %v, want %q", err, want)
			}
		})
	}
	t.Run("broken identity", func(t *testing.T) {
		setup(t)
		t.Setenv("NATS_NKEY_SEED", seedFile)
		t.Setenv("NATS_CREDS", seedFile)
		t.Setenv("NATS_CERT", seedFile)
		err, _ := runFails(t, "gateway", "--listen", "127.0.0.1:0", "--config", "testdata/config.yaml")
		for _, want := range []string{
			"NATS_CREDS and NATS_NKEY_SEED are both set",
			"NATS_CREDS " + seedFile + ": not a creds file",
			"NATS_CERT is set without NATS_KEY",
		} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error %q does not say %q", err, want)
			}
		}
		seed, _ := os.ReadFile(seedFile)
		if strings.Contains(err.Error(), strings.TrimSpace(string(seed))) {
			t.Errorf("the error shows the seed: %v", err)
		}
	})
}
