package main

import (
	"errors"
	"log/slog"
	"math"
	"os"
	"runtime/debug"

	"github.com/KimMachineGun/automemlimit/memlimit"
)

// memLimitRatio is the share of the cgroup's memory limit given to
// GOMEMLIMIT: the rest is room for what the Go runtime does not count
// (stacks of threads in cgo, the kernel's page cache charged to the
// cgroup), so the garbage collector works harder before the kernel kills.
const memLimitRatio = 0.9

// setMemoryLimit sets the Go runtime's soft memory limit from the cgroup's
// memory limit (memLimitRatio of it) when GOMEMLIMIT is not set, and logs
// the limit in force. AUTOMEMLIMIT=off leaves it unset; AUTOMEMLIMIT=0.8
// takes another ratio (automemlimit's own variable). It returns the limit,
// math.MaxInt64 for none.
func setMemoryLimit(log *slog.Logger) int64 { return setMemoryLimitFrom(log, memlimit.FromCgroup) }

// setMemoryLimitFrom is setMemoryLimit with the cgroup's limit read by
// cgroup (tests pass their own).
func setMemoryLimitFrom(log *slog.Logger, cgroup memlimit.Provider) int64 {
	_, err := memlimit.Set(memlimit.WithRatio(memLimitRatio), memlimit.WithProvider(cgroup))
	limit := debug.SetMemoryLimit(-1)
	source := "cgroup"
	switch {
	case os.Getenv("GOMEMLIMIT") != "":
		source = "GOMEMLIMIT"
	case errors.Is(err, memlimit.ErrNoCgroup), limit == math.MaxInt64 && err == nil:
		source = "none"
	case err != nil:
		log.Warn("could not read the cgroup's memory limit; GOMEMLIMIT stays unset", "error", err)
		source = "none"
	}
	if limit == math.MaxInt64 {
		log.Info("memory limit", "gomemlimit", "none", "source", source)
	} else {
		log.Info("memory limit", "gomemlimit_bytes", limit, "source", source)
	}
	return limit
}
