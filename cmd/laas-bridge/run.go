package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"

	"github.com/joho/godotenv"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

// errUsage is returned after usage has been printed.
var errUsage = errors.New("usage")

const usage = `laas-bridge serves Wanted LaaS presets to OpenAI clients through NATS JetStream.

Usage:
  laas-bridge serve [--demo] [flags]   gateway + workers + embedded NATS in one process
  laas-bridge gateway [flags]          the HTTP front end only (needs NATS_URL)
  laas-bridge worker [flags]           a worker pool only (needs NATS_URL)
  laas-bridge mock-laas [flags]        a LaaS look-alike for demos, tests and benchmarks
  laas-bridge dlq list|replay [flags]  inspect and replay dead letters (needs NATS_URL)
  laas-bridge batch submit|status|results|cancel
                                       OpenAI batches through a running bridge
  laas-bridge version                  print the version

Run 'laas-bridge <command> -h' for a command's flags. Settings come from the
environment and a .env file in the working directory; flags override both.
`

// run is main without the process: tests call it in-process. It reads the
// environment (after loading .env, whose values never override real ones).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	if err := loadDotEnv(".env"); err != nil {
		return err
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve", "gateway", "worker":
		return runBridge(ctx, cmd, rest, stdout, stderr)
	case "mock-laas":
		return runMock(ctx, rest, stderr)
	case "dlq":
		return runDLQ(ctx, rest, stdout, stderr)
	case "batch":
		return runBatch(ctx, rest, stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprintf(stderr, "unknown command %q\n\n%s", cmd, usage)
	return errUsage
}

// loadDotEnv reads path into the environment when it exists; variables
// already set win, as they did with the earlier handler.
func loadDotEnv(path string) error {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err := godotenv.Load(path); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	return nil
}

func versionString() string {
	v := version
	goVersion := ""
	if bi, ok := debug.ReadBuildInfo(); ok {
		goVersion = bi.GoVersion
		if v == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v = bi.Main.Version
		}
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += "+" + s.Value[:12]
			}
		}
	}
	return strings.TrimSpace("laas-bridge " + v + " " + goVersion)
}

// secretFlag registers a string flag that overrides *target when given but
// shows no default: the value from the environment may hold a password
// (nats://user:pass@host), which -h or a mistyped flag would print.
func secretFlag(fs *flag.FlagSet, target *string, name, usage string) {
	fs.Func(name, usage, func(v string) error {
		*target = v
		return nil
	})
}

// parseFlags parses args and turns -h into errUsage after printing help.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errUsage
		}
		return errUsage // the flag package has printed the problem and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return errUsage
	}
	return nil
}
