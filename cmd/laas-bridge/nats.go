package main

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/laas-bridge/laas-bridge/queue"
)

// connectNATS connects to NATS_URL with the process's identity (NATS_CREDS,
// NATS_NKEY_SEED, NATS_CA, NATS_CERT, NATS_KEY), or for `serve` without it
// starts the embedded server. The returned func closes the connection and
// the server.
func connectNATS(cmd string, env Env, log *slog.Logger) (*nats.Conn, func(), error) {
	name := "laas-bridge " + cmd
	if env.NATSURL != "" {
		opts, err := env.natsIdentity().Options()
		if err != nil {
			return nil, nil, err
		}
		if cmd == "gateway" {
			// A request answered 503 is never queued later from a buffer.
			opts = append(opts, queue.Unbuffered())
		}
		nc, err := queue.Connect(env.NATSURL, name, log, opts...)
		if err != nil {
			return nil, nil, err
		}
		log.Info("connected to NATS", "server", nc.ConnectedUrlRedacted())
		return nc, func() { _ = nc.Drain() }, nil
	}
	srv, err := startEmbedded(env, log)
	if err != nil {
		return nil, nil, err
	}
	nc, err := queue.ConnectEmbedded(srv, name, log)
	if err != nil {
		srv.Shutdown()
		return nil, nil, err
	}
	return nc, func() {
		_ = nc.Drain()
		for !nc.IsClosed() {
			time.Sleep(10 * time.Millisecond)
		}
		srv.Shutdown()
		srv.WaitForShutdown()
	}, nil
}

// startEmbedded starts `serve`'s NATS server with its store under the data
// dir. It opens no port unless BRIDGE_NATS_LISTEN is set; then only the
// nkey user whose seed is in <data dir>/nats-user.nk (generated on first
// start, mode 0600) may connect there, and the log names the file.
func startEmbedded(env Env, log *slog.Logger) (*server.Server, error) {
	store := filepath.Join(env.DataDir, "nats")
	if err := os.MkdirAll(store, 0o750); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	cfg := queue.EmbeddedConfig{StoreDir: store, Listen: env.NATSListen}
	seedFile := filepath.Join(env.DataDir, queue.SeedFileName)
	if cfg.Listen != "" {
		pub, created, err := queue.LoadOrCreateUserSeed(seedFile)
		if err != nil {
			return nil, err
		}
		if created {
			log.Info("generated the nkey user for the embedded NATS port", "nkey_seed_file", seedFile, "public_key", pub)
		}
		cfg.NKeys = []string{pub}
	}
	srv, err := queue.StartEmbedded(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.Listen == "" {
		log.Info("embedded NATS started", "store", store, "listen", "none (in-process only; set BRIDGE_NATS_LISTEN to let other programs connect)")
		return srv, nil
	}
	log.Info("embedded NATS started", "store", store, "client_url", srv.ClientURL(), "nkey_seed_file", seedFile,
		"connect_with", "NATS_NKEY_SEED="+seedFile+" NATS_URL="+srv.ClientURL())
	return srv, nil
}

// apiAuth refuses to run an HTTP API without BRIDGE_MASTER_KEY unless the
// operator asked for an open one: with `serve --demo` or BRIDGE_AUTH=none.
// It returns which of the two opened it ("" when the key is set: a key is
// always required once set).
func apiAuth(cmd string, env Env, demo bool) (open string, err error) {
	switch {
	case env.MasterKey != "":
		return "", nil
	case env.Auth == "none":
		return "BRIDGE_AUTH=none", nil
	case demo:
		return "--demo", nil
	}
	return "", fmt.Errorf("BRIDGE_MASTER_KEY is not set, and `laas-bridge %s` does not serve an API anyone can call: set BRIDGE_MASTER_KEY to a secret (for example the output of `openssl rand -hex 32`) that callers send as their bearer key; or, to run without a key on purpose, set BRIDGE_AUTH=none, or try it with `laas-bridge serve --demo`", cmd)
}
