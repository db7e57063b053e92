package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAccessLogEnv: BRIDGE_ACCESS_LOG is off unless set.
func TestAccessLogEnv(t *testing.T) {
	clearEnv(t)
	e, err := readEnv()
	if err != nil {
		t.Fatal(err)
	}
	if e.AccessLog != "off" {
		t.Errorf("BRIDGE_ACCESS_LOG defaults to %q, want off", e.AccessLog)
	}
	t.Setenv("BRIDGE_ACCESS_LOG", "stdout")
	if e, err = readEnv(); err != nil || e.AccessLog != "stdout" {
		t.Errorf("BRIDGE_ACCESS_LOG=stdout read as %q, %v", e.AccessLog, err)
	}
}

// TestOpenAccessLog: off and empty open nothing; stdout writes there; a
// path is appended to (created 0640 when missing); a path that cannot be
// opened is a startup error naming the setting.
func TestOpenAccessLog(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, target string
		wantLog      bool
		wantErr      bool
	}{
		{"off", "off", false, false},
		{"OFF", "OFF", false, false},
		{"empty", "", false, false},
		{"stdout", "stdout", true, false},
		{"new file", filepath.Join(dir, "access.log"), true, false},
		{"missing directory", filepath.Join(dir, "nope", "access.log"), false, true},
		{"a directory", dir, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout bytes.Buffer
			log, closeLog, err := openAccessLog(tc.target, &stdout)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "BRIDGE_ACCESS_LOG") {
					t.Fatalf("openAccessLog(%q) = %v, want an error naming BRIDGE_ACCESS_LOG", tc.target, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if err := closeLog(); err != nil {
				t.Fatal(err)
			}
			if (log != nil) != tc.wantLog {
				t.Errorf("openAccessLog(%q) log = %v, want one: %v", tc.target, log, tc.wantLog)
			}
			if stdout.Len() != 0 {
				t.Errorf("opening wrote %q to stdout", stdout.String())
			}
		})
	}
}

// TestAccessLogFileAppends: a file is appended to, never truncated; one
// it creates is 0640.
func TestAccessLogFileAppends(t *testing.T) {
	path := filepath.Join(t.TempDir(), "access.log")
	var want string
	for i := range 2 {
		w, closeLog, err := accessLogWriter(path, nil)
		if err != nil {
			t.Fatal(err)
		}
		line := fmt.Sprintf(`{"msg":"access","n":%d}`+"\n", i)
		if _, err := io.WriteString(w, line); err != nil {
			t.Fatal(err)
		}
		want += line
		if err := closeLog(); err != nil {
			t.Fatal(err)
		}
		if data, err := os.ReadFile(path); err != nil || string(data) != want {
			t.Fatalf("after open %d the file holds %q (%v), want %q", i+1, data, err, want)
		}
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm()&^accessLogFileMode != 0 {
		t.Errorf("access log file mode %v, want at most %v", info.Mode().Perm(), os.FileMode(accessLogFileMode))
	}
}
