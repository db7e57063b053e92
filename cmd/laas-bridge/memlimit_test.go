package main

import (
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strings"
	"testing"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// TestSetMemoryLimit: without GOMEMLIMIT, the runtime's memory limit is
// 90% of the cgroup's, and the log says so; GOMEMLIMIT set wins; no
// cgroup limit leaves none.
func TestSetMemoryLimit(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	const gib = 1 << 30
	for _, tc := range []struct {
		name, gomemlimit string
		cgroup           memlimit.Provider
		want             int64
		log              string
	}{
		{"from the cgroup", "", memlimit.Limit(gib), 966367641, "gomemlimit_bytes=966367641 source=cgroup"},
		{"no cgroup", "", func() (uint64, error) { return 0, memlimit.ErrNoCgroup }, math.MaxInt64, "gomemlimit=none source=none"},
		{"GOMEMLIMIT wins", "512MiB", memlimit.Limit(gib), 512 << 20, "gomemlimit_bytes=536870912 source=GOMEMLIMIT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("GOMEMLIMIT", tc.gomemlimit)
			t.Setenv("AUTOMEMLIMIT", "")
			_ = os.Unsetenv("AUTOMEMLIMIT") // restored by t.Setenv's cleanup
			debug.SetMemoryLimit(math.MaxInt64)
			if tc.gomemlimit != "" {
				debug.SetMemoryLimit(512 << 20) // as the runtime reads GOMEMLIMIT at start
			}
			var logs syncBuffer
			got := setMemoryLimitFrom(slog.New(slog.NewTextHandler(&logs, nil)), tc.cgroup)
			if got != tc.want || debug.SetMemoryLimit(-1) != tc.want {
				t.Errorf("limit = %d (runtime %d), want %d", got, debug.SetMemoryLimit(-1), tc.want)
			}
			if !strings.Contains(logs.String(), tc.log) {
				t.Errorf("log %q lacks %q", logs.String(), tc.log)
			}
		})
	}
}
