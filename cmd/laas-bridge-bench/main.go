// Command laas-bridge-bench measures laas-bridge against a plain proxy to
// the same LaaS mock: added latency, throughput ratio, CPU profile, the
// memory of a burst of callers, the latency a batch adds to interactive
// calls, and a soak (mixed traffic for a long time while workers restart:
// nothing lost or duplicated, memory flat). It is a development tool, not part of the product
// binary; `laas-bridge-bench -h` lists its flags.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.LookupEnv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "laas-bridge-bench:", err)
		}
		os.Exit(1)
	}
}

// errUsage is returned after usage has been printed.
var errUsage = errors.New("usage")

// run is main without the process: tests call it in-process. lookupEnv
// reads the environment; a .env file in the working directory fills in
// what it does not have.
func run(ctx context.Context, args []string, lookupEnv func(string) (string, bool), stdout, stderr io.Writer) error {
	lookupEnv, err := withDotEnv(".env", lookupEnv)
	if err != nil {
		return err
	}
	if len(args) > 0 && args[0] == baselineCommand {
		return runBaseline(ctx, args[1:], lookupEnv, stderr)
	}
	return runBench(ctx, args, lookupEnv, stdout, stderr)
}
