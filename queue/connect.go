package queue

import (
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	neturl "net/url"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// Connect dials the NATS servers in url (a comma-separated list) and keeps
// reconnecting for as long as the process lives. The first connection must
// succeed: an unreachable server is an error that names the URL without
// credentials, and a server that refuses the client's identity or whose
// certificate the client does not trust says which variable to set. opts
// come after the defaults: a client's Identity.Options, Unbuffered.
func Connect(url, name string, log *slog.Logger, opts ...nats.Option) (*nats.Conn, error) {
	if strings.TrimSpace(url) == "" {
		return nil, errors.New("NATS_URL is not set: gateway and worker need a NATS server (or run `laas-bridge serve`, which embeds one)")
	}
	nc, err := nats.Connect(url, append(options(name, log), opts...)...)
	var bad *neturl.Error
	switch {
	case errors.As(err, &bad):
		// A parse error quotes the URL, password and all: say it without it.
		return nil, fmt.Errorf("connect to NATS at %s: malformed URL (percent-encode special characters in the user and password)", redactURL(url))
	case err != nil:
		return nil, fmt.Errorf("connect to NATS at %s: %w%s", redactURL(url), err, connectHint(err))
	}
	return nc, nil
}

// connectHint says what to set when err is the server refusing the
// client's identity or the client not trusting the server's certificate.
func connectHint(err error) string {
	var unknownCA x509.UnknownAuthorityError
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired), errors.Is(err, nats.ErrAuthRevoked):
		return fmt.Sprintf(" (the server did not accept this client: give it an identity the server knows, with %s, %s, or user:password in NATS_URL, and %s/%s for a client certificate)",
			EnvCreds, EnvNKeySeed, EnvCert, EnvKey)
	case errors.As(err, &unknownCA):
		return fmt.Sprintf(" (set %s to the CA bundle that signed the server's certificate)", EnvCA)
	case errors.Is(err, nats.ErrSecureConnRequired):
		return fmt.Sprintf(" (the server requires TLS: set %s to its CA bundle, or use a tls:// URL)", EnvCA)
	}
	return ""
}

// Unbuffered makes a connection refuse to publish while it reconnects
// (nats.ErrReconnectBufExceeded, which failover.Publish retries until the
// connection is back) instead of keeping the message to send after the
// reconnect. A gateway needs it: a request it answered 503 because its
// publish got no ack in time must not reach the queue later from that
// buffer. Workers keep the buffer: their acks are worth sending late.
func Unbuffered() nats.Option { return nats.ReconnectBufSize(-1) }

// ConnectEmbedded connects to an embedded server in-process, without a socket.
func ConnectEmbedded(s *server.Server, name string, log *slog.Logger) (*nats.Conn, error) {
	nc, err := nats.Connect("", append(options(name, log), nats.InProcessServer(s))...)
	if err != nil {
		return nil, fmt.Errorf("connect to embedded NATS: %w", err)
	}
	return nc, nil
}

func options(name string, log *slog.Logger) []nats.Option {
	return []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(500 * time.Millisecond),
		nats.Timeout(5 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn("nats disconnected", "error", err)
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) { log.Info("nats reconnected", "server", nc.ConnectedUrlRedacted()) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			subject := ""
			if sub != nil {
				subject = sub.Subject
			}
			log.Error("nats async error", "subject", subject, "error", err)
		}),
	}
}

// redactURL hides user:password in every server of a NATS URL list.
func redactURL(list string) string {
	parts := strings.Split(list, ",")
	for i, p := range parts {
		if at := strings.LastIndex(p, "@"); at >= 0 {
			if scheme := strings.Index(p, "://"); scheme >= 0 && scheme < at {
				parts[i] = p[:scheme+3] + "[redacted]" + p[at:]
			} else {
				parts[i] = "[redacted]" + p[at:]
			}
		}
	}
	return strings.Join(parts, ",")
}
