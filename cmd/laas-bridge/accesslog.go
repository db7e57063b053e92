package main

import (
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/laas-bridge/laas-bridge/bridge"
)

// accessLogFileMode is the mode of an access log file this process
// creates: its owner writes, its group (a log shipper) reads.
const accessLogFileMode = 0o640

// openAccessLog opens the access log BRIDGE_ACCESS_LOG names: "off" (or
// empty) for none (nil), "stdout" for stdout, else the path of a file it
// appends to, created when missing. close closes the file (a no-op
// otherwise).
func openAccessLog(target string, stdout io.Writer) (log *bridge.AccessLog, close func() error, err error) {
	w, close, err := accessLogWriter(target, stdout)
	if w == nil || err != nil {
		return nil, close, err
	}
	return bridge.NewAccessLog(w), close, nil
}

// accessLogWriter is where BRIDGE_ACCESS_LOG's lines go: nil for off.
func accessLogWriter(target string, stdout io.Writer) (w io.Writer, close func() error, err error) {
	none := func() error { return nil }
	switch strings.ToLower(strings.TrimSpace(target)) {
	case "", "off":
		return nil, none, nil
	case "stdout":
		return stdout, none, nil
	}
	f, err := os.OpenFile(target, os.O_WRONLY|os.O_APPEND|os.O_CREATE, accessLogFileMode)
	if err != nil {
		return nil, nil, fmt.Errorf("BRIDGE_ACCESS_LOG %q: use off, stdout or the path of a file to append to: %w", target, err)
	}
	return f, f.Close, nil
}
