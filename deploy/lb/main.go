// Command laas-bridge-lb is the load balancer of deploy/compose.yaml: one
// port in front of every gateway container. It resolves the upstream's
// name (default "gateway:4000", the compose service) every second, so
// `--scale gateway=N` and a stopped gateway show up by themselves, and
// sends requests to the addresses in turn.
//
// A request goes to the next address when a connection cannot be made,
// since then nothing was sent; once sent, it is never sent again (a chat
// completion is not idempotent). Streamed answers are passed on as they
// come, and nothing times out a request: the gateway has its own deadline.
//
// It is built FROM scratch by deploy/build-images.sh (deploy/lb/Dockerfile).
// Flags, each with an environment variable as its default:
//
//	--listen        LB_LISTEN        address to serve on (default :4000)
//	--upstream      LB_UPSTREAM      host:port of the gateways (default gateway:4000)
//	--resolve-every LB_RESOLVE_EVERY how often to resolve the host again (default 1s)
//	--dial-timeout  LB_DIAL_TIMEOUT  connection timeout per address (default 3s)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr, nil); err != nil {
		fmt.Fprintln(os.Stderr, "laas-bridge-lb:", err)
		os.Exit(1)
	}
}

// config is the balancer's configuration.
type config struct {
	Listen       string
	Upstream     string
	ResolveEvery time.Duration
	DialTimeout  time.Duration
}

func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	env := func(k, def string) string {
		if v := getenv(k); v != "" {
			return v
		}
		return def
	}
	var c config
	fs := flag.NewFlagSet("laas-bridge-lb", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.Listen, "listen", env("LB_LISTEN", ":4000"), "address to serve on")
	fs.StringVar(&c.Upstream, "upstream", env("LB_UPSTREAM", "gateway:4000"), "host:port of the gateways; the host is resolved again every --resolve-every")
	every, err := time.ParseDuration(env("LB_RESOLVE_EVERY", "1s"))
	if err != nil {
		return c, fmt.Errorf("LB_RESOLVE_EVERY: %w", err)
	}
	dial, err := time.ParseDuration(env("LB_DIAL_TIMEOUT", "3s"))
	if err != nil {
		return c, fmt.Errorf("LB_DIAL_TIMEOUT: %w", err)
	}
	fs.DurationVar(&c.ResolveEvery, "resolve-every", every, "how often to resolve the upstream host again")
	fs.DurationVar(&c.DialTimeout, "dial-timeout", dial, "connection timeout per address")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected arguments %v", fs.Args())
	}
	var errs []error
	if c.ResolveEvery <= 0 {
		errs = append(errs, errors.New("--resolve-every must be positive"))
	}
	if c.DialTimeout <= 0 {
		errs = append(errs, errors.New("--dial-timeout must be positive"))
	}
	if _, _, err := net.SplitHostPort(c.Upstream); err != nil {
		errs = append(errs, fmt.Errorf("--upstream %q: %w", c.Upstream, err))
	}
	return c, errors.Join(errs...)
}

// run serves until ctx is done. ready, when not nil, receives the listener's
// address once it listens.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer, ready chan<- string) error {
	c, err := parseFlags(args, getenv, stderr)
	if err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(stderr, nil))
	resolve, err := dnsResolver(c.Upstream)
	if err != nil {
		return err
	}
	transport := &http.Transport{
		DialContext: (&net.Dialer{Timeout: c.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		// Shorter than the gateway's idle timeout (2 minutes), so that the
		// balancer, not the gateway, closes an idle connection.
		IdleConnTimeout:     time.Minute,
		MaxIdleConnsPerHost: 64,
		// No ResponseHeaderTimeout: the gateway answers when the work is done.
	}
	b := newBalancer(resolve, transport, 5*time.Second, log)
	if err := b.refresh(ctx); err != nil {
		// The gateways may not be up yet; run resolves again.
		log.Warn("resolve upstream failed", "upstream", c.Upstream, "err", err)
	}
	go b.run(ctx, c.ResolveEvery)

	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		Handler:           proxy(b, log),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info("lb listening", "addr", ln.Addr().String(), "upstream", c.Upstream)
	if ready != nil {
		ready <- ln.Addr().String()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	// Callers still waiting get their answers: the gateways drain too.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 35*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
