package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/joho/godotenv"
)

// withDotEnv returns lookup, falling back to the variables of the file at
// path when it exists: variables already set win, as in laas-bridge.
func withDotEnv(path string, lookup func(string) (string, bool)) (func(string) (string, bool), error) {
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return lookup, nil
	}
	vars, err := godotenv.Read(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return func(name string) (string, bool) {
		if v, ok := lookup(name); ok {
			return v, true
		}
		v, ok := vars[name]
		return v, ok
	}, nil
}

// envDefault is the variable name, or def when it is not set.
func envDefault(lookup func(string) (string, bool), name, def string) string {
	if v, ok := lookup(name); ok {
		return v
	}
	return def
}

// secretFlag registers a string flag that overrides *target when given but
// shows no default: the value from the environment may hold a secret,
// which -h or a mistyped flag would print.
func secretFlag(fs *flag.FlagSet, target *string, name, usage string) {
	fs.Func(name, usage, func(v string) error {
		*target = v
		return nil
	})
}

// parseFlags parses args and turns -h into errUsage after printing help.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return errUsage // the flag package has printed the problem and the usage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		return errUsage
	}
	return nil
}
