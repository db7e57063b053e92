package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/laas-bridge/laas-bridge/laas/laasmock"
)

// runMock runs the LaaS look-alike until ctx is done.
func runMock(ctx context.Context, args []string, stderr io.Writer) error {
	env, err := readEnv()
	if err != nil {
		return err
	}
	var cfg laasmock.Config
	listen := env.MockListen
	accessLog := false
	fs := flag.NewFlagSet("mock-laas", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&listen, "listen", listen, "listen address (MOCK_LAAS_LISTEN)")
	fs.DurationVar(&cfg.Latency, "latency", env.MockLatency, "added latency per answer (MOCK_LAAS_LATENCY)")
	fs.Float64Var(&cfg.Rate429, "rate-429", env.MockRate429, "fraction of calls answered 429, 0 to 1 (MOCK_LAAS_RATE_429)")
	fs.Float64Var(&cfg.Rate500, "rate-500", env.MockRate500, "fraction of calls answered 500, 0 to 1 (MOCK_LAAS_RATE_500)")
	fs.StringVar(&cfg.ProjectCode, "project", "", "accept only this project header (default: any non-empty value)")
	fs.StringVar(&cfg.APIKey, "api-key", "", "accept only this apiKey header (default: any non-empty value)")
	fs.Int64Var(&cfg.Seed, "seed", 1, "seed for the injected failures")
	fs.BoolVar(&cfg.Wild, "wild", false, "answer in the variant shapes seen from LaaS in the wild")
	fs.BoolVar(&accessLog, "access-log", false, "log every call as a JSON line on stderr")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if accessLog {
		cfg.AccessLog = stderr
	}
	mock, err := laasmock.New(cfg)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("mock-laas: listen on %s: %w", listen, err)
	}
	srv := &http.Server{Handler: mock, ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	fmt.Fprintf(stderr, "mock-laas listening on http://%s (latency %s, 429 rate %g, 500 rate %g)\n", ln.Addr(), cfg.Latency, cfg.Rate429, cfg.Rate500)
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
