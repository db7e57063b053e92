package queue_test

import (
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/laas-bridge/laas-bridge/queue"
)

func TestConnectWithoutURL(t *testing.T) {
	const want = "NATS_URL is not set: gateway and worker need a NATS server (or run `laas-bridge serve`, which embeds one)"
	for _, tc := range []struct{ name, url string }{
		{"empty", ""},
		{"blank", " \t "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nc, err := queue.Connect(tc.url, "t", slog.New(slog.DiscardHandler))
			if nc != nil {
				nc.Close()
				t.Error("Connect returned a connection, want nil")
			}
			if err == nil || err.Error() != want {
				t.Errorf("Connect(%q) error = %v, want %q", tc.url, err, want)
			}
		})
	}
}

func TestConnectUnreachable(t *testing.T) {
	tests := []struct {
		name     string
		url      string
		password string
		want     string
	}{
		{"no credentials", "nats://127.0.0.1:1", "",
			"connect to NATS at nats://127.0.0.1:1: nats: no servers available for connection"},
		{"user and password", "nats://bridge:s3cret-pw@127.0.0.1:1", "s3cret-pw",
			"connect to NATS at nats://[redacted]@127.0.0.1:1: nats: no servers available for connection"},
		{"token", "nats://t0ken-s3cret@127.0.0.1:1", "t0ken-s3cret",
			"connect to NATS at nats://[redacted]@127.0.0.1:1: nats: no servers available for connection"},
		{"list", "nats://a:pw-one@127.0.0.1:1,nats://b:pw-two@127.0.0.1:2", "pw-",
			"connect to NATS at nats://[redacted]@127.0.0.1:1,nats://[redacted]@127.0.0.1:2: nats: no servers available for connection"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			nc, err := queue.Connect(tc.url, "t", slog.New(slog.DiscardHandler))
			if elapsed := time.Since(start); elapsed > quick {
				t.Errorf("Connect took %s to fail, want under %s", elapsed, quick)
			}
			if nc != nil {
				nc.Close()
				t.Fatal("Connect returned a connection, want nil")
			}
			if err == nil {
				t.Fatal("Connect error = nil, want one")
			}
			if tc.password != "" && strings.Contains(err.Error(), tc.password) {
				t.Errorf("error %q contains the password", err)
			}
			if err.Error() != tc.want {
				t.Errorf("error =\n\t%q\nwant\n\t%q", err, tc.want)
			}
			if !errors.Is(err, nats.ErrNoServers) {
				t.Errorf("errors.Is(err, nats.ErrNoServers) = false for %v", err)
			}
		})
	}
}

// BUG: a password with a character that breaks URL parsing ('/', '?', '#',
// '%' not percent-encoded) makes nats.Connect fail with a *url.Error whose
// text quotes the whole URL, and Connect wraps that text after the redacted
// URL, so the password reaches the error (and the log line that prints it).
func TestConnectMalformedURLHidesPassword(t *testing.T) {
	tests := []struct{ name, url string }{
		{"slash in password", "nats://bridge:pa/ss-s3cret@127.0.0.1:1"},
		{"percent in password", "nats://bridge:pa%zzs3cret@127.0.0.1:1"},
		{"question mark in password", "nats://bridge:pa?ss-s3cret@127.0.0.1:1"},
		{"hash in password", "nats://bridge:s3cret#pa@127.0.0.1:1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			nc, err := queue.Connect(tc.url, "t", slog.New(slog.DiscardHandler))
			if elapsed := time.Since(start); elapsed > quick {
				t.Errorf("Connect took %s to fail, want under %s", elapsed, quick)
			}
			if nc != nil {
				nc.Close()
				t.Fatal("Connect returned a connection, want nil")
			}
			if err == nil {
				t.Fatal("Connect error = nil, want one")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, "connect to NATS at nats://[redacted]@127.0.0.1:1") {
				t.Errorf("error %q does not start with the redacted URL", msg)
			}
			if strings.Contains(msg, "s3cret") || strings.Contains(msg, "bridge:") {
				t.Errorf("error %q reveals the credentials", msg)
			}
		})
	}
}

// NATS_URL is a comma-separated list: Connect uses any server of it that
// answers, and moves to another when its server goes away.
func TestConnectList(t *testing.T) {
	start := func() *server.Server {
		srv, err := queue.StartEmbedded(queue.EmbeddedConfig{StoreDir: t.TempDir(), Listen: "127.0.0.1:0"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
		return srv
	}
	a, b := start(), start()
	// An unreachable server first, and a space after a comma.
	nc, err := queue.Connect("nats://127.0.0.1:1,"+a.ClientURL()+", "+b.ClientURL(), "t", slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Connect: %v", err)
	}
	defer nc.Close()
	first := nc.ConnectedUrl()
	if first != a.ClientURL() && first != b.ClientURL() {
		t.Fatalf("connected to %q, want %q or %q", first, a.ClientURL(), b.ClientURL())
	}
	want := b
	if first == b.ClientURL() {
		a, want = b, a
	}
	a.Shutdown()
	for deadline := time.Now().Add(20 * time.Second); nc.ConnectedUrl() != want.ClientURL(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("after its server stopped, connected to %q, want %q", nc.ConnectedUrl(), want.ClientURL())
		}
	}
	if err := nc.Flush(); err != nil {
		t.Errorf("flush on the other server: %v", err)
	}
}
