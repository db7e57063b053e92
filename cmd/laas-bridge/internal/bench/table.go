package bench

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Names of the targets the table compares: the mock called directly is the
// floor; added latency and the throughput ratio are against these rows.
const (
	TargetMock     = "mock-direct"
	TargetBaseline = "baseline"
	TargetBridge   = "bridge"
)

// WriteTable prints results as a table. For every fixed-rate row of a
// target other than the mock, +p50 and +p99 are its latency minus the mock
// row's of the same mode; for a closed-loop bridge row, "x baseline" is its
// throughput over the baseline row's of the same mode.
func WriteTable(w io.Writer, results []*Result) error {
	find := func(target, mode string) *Result {
		for _, r := range results {
			if r.Target == target && r.Mode == mode {
				return r
			}
		}
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "target\tmode\trequests\terrors\treq/s\tp50\tp95\tp99\t+p50\t+p99\tx baseline\t")
	for _, r := range results {
		added50, added99, ratio := "", "", ""
		if mock := find(TargetMock, r.Mode); mock != nil && r.Target != TargetMock && strings.HasPrefix(r.Mode, "fixed") {
			added50 = ms(r.Quantile(50) - mock.Quantile(50))
			added99 = ms(r.Quantile(99) - mock.Quantile(99))
		}
		if base := find(TargetBaseline, r.Mode); base != nil && r.Target == TargetBridge && strings.HasPrefix(r.Mode, "closed") && base.Throughput() > 0 {
			ratio = fmt.Sprintf("%.2f", r.Throughput()/base.Throughput())
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Target, r.Mode, r.Requests, r.Errors, r.Throughput(),
			ms(r.Quantile(50)), ms(r.Quantile(95)), ms(r.Quantile(99)), added50, added99, ratio)
	}
	return tw.Flush()
}

// ms formats d in milliseconds with three decimals (microseconds).
func ms(d time.Duration) string {
	return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64) + "ms"
}

// Memory is a process's resident memory, from /proc/<pid>/status.
type Memory struct {
	RSS, Peak int64 // VmRSS and VmHWM, in bytes
}

// ReadMemory reads pid's VmRSS and VmHWM (Linux only).
func ReadMemory(pid int) (Memory, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return Memory{}, err
	}
	defer f.Close()
	var m Memory
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		key, val, ok := strings.Cut(sc.Text(), ":")
		if !ok {
			continue
		}
		var dst *int64
		switch key {
		case "VmRSS":
			dst = &m.RSS
		case "VmHWM":
			dst = &m.Peak
		default:
			continue
		}
		kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 10, 64)
		if err != nil {
			return m, fmt.Errorf("/proc/%d/status %s: %w", pid, key, err)
		}
		*dst = kb << 10
	}
	return m, sc.Err()
}

// MiB formats n bytes in MiB.
func MiB(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
