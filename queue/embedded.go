package queue

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// EmbeddedConfig configures the NATS server that `serve` runs in-process.
type EmbeddedConfig struct {
	// StoreDir holds JetStream's file store.
	StoreDir string
	// Listen is host:port for other programs (batch producers, extra
	// workers) to reach the server; port 0 picks a free one; empty listens
	// nowhere and only in-process connections work.
	Listen string
	// NKeys are the public keys of the nkey users that may connect over
	// Listen. Set, nothing else may (an anonymous client is refused), while
	// in-process connections (ConnectEmbedded) still need no credentials.
	// Empty, anyone who reaches Listen may connect: for tests only.
	NKeys []string
}

// StartEmbedded starts a single NATS server with JetStream and waits until
// it accepts connections. Stop it with Shutdown and WaitForShutdown.
func StartEmbedded(cfg EmbeddedConfig) (*server.Server, error) {
	if cfg.StoreDir == "" {
		return nil, errors.New("embedded NATS needs a store directory")
	}
	opts := &server.Options{
		ServerName: "laas-bridge-embedded",
		JetStream:  true,
		StoreDir:   cfg.StoreDir,
		NoSigs:     true,
		NoLog:      true,
	}
	if cfg.Listen == "" {
		opts.DontListen = true
	} else {
		host, port, err := net.SplitHostPort(cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS listen address %q: %w", cfg.Listen, err)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 0 || p > 65535 {
			return nil, fmt.Errorf("embedded NATS listen address %q: bad port", cfg.Listen)
		}
		// The server says nothing when it cannot listen: find out first.
		ln, err := net.Listen("tcp", cfg.Listen)
		if err != nil {
			return nil, fmt.Errorf("embedded NATS cannot listen on %s: %w", cfg.Listen, err)
		}
		ln.Close()
		if p == 0 {
			p = server.RANDOM_PORT
		}
		opts.Host, opts.Port = host, p
		if err := requireNKeys(opts, cfg.NKeys); err != nil {
			return nil, err
		}
	}
	s, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded NATS: %w", err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		return nil, fmt.Errorf("embedded NATS did not start within 10s (listen %q, store %q)", cfg.Listen, cfg.StoreDir)
	}
	return s, nil
}

// requireNKeys lets only the nkey users keys connect over the network.
// In-process clients connect as a user of their own, with no credentials
// (the server's no_auth_user), whose only allowed connection type is
// in-process: a network client without credentials is mapped to it too,
// and refused.
func requireNKeys(opts *server.Options, keys []string) error {
	if len(keys) == 0 {
		return nil
	}
	inProcess, err := nkeys.CreateUser()
	if err != nil {
		return fmt.Errorf("embedded NATS: %w", err)
	}
	defer inProcess.Wipe()
	pub, err := inProcess.PublicKey()
	if err != nil {
		return fmt.Errorf("embedded NATS: %w", err)
	}
	opts.Nkeys = []*server.NkeyUser{{Nkey: pub, AllowedConnectionTypes: map[string]struct{}{jwt.ConnectionTypeInProcess: {}}}}
	opts.NoAuthUser = pub
	for _, k := range keys {
		if !nkeys.IsValidPublicUserKey(k) {
			return fmt.Errorf("embedded NATS: %q is not an nkey user's public key", k)
		}
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: k, AllowedConnectionTypes: map[string]struct{}{jwt.ConnectionTypeStandard: {}}})
	}
	return nil
}
