// Command laas-bridge serves Wanted LaaS presets to OpenAI clients through a
// NATS JetStream queue. See the README for its subcommands.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if errors.Is(err, errInterrupted) {
			os.Exit(130) // the message said what keeps running
		}
		if !errors.Is(err, errUsage) {
			fmt.Fprintln(os.Stderr, "laas-bridge:", err)
		}
		os.Exit(1)
	}
}
