package load

import (
	"bufio"
	"errors"
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
// throughput over the baseline row's of the same mode, and "CPU x
// baseline" its CPU per request over the baseline's. CPU/req is the
// target process's CPU time (user and system) per answered request.
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
	fmt.Fprintln(tw, "target\tmode\trequests\terrors\treq/s\tp50\tp95\tp99\t+p50\t+p99\tx baseline\tCPU/req\tCPU x baseline\t")
	for _, r := range results {
		added50, added99, ratio, cpu, cpuRatio := "", "", "", "", ""
		if mock := find(TargetMock, r.Mode); mock != nil && r.Target != TargetMock && strings.HasPrefix(r.Mode, "fixed") {
			added50 = ms(r.Quantile(50) - mock.Quantile(50))
			added99 = ms(r.Quantile(99) - mock.Quantile(99))
		}
		if base := find(TargetBaseline, r.Mode); base != nil && r.Target == TargetBridge && strings.HasPrefix(r.Mode, "closed") && base.Throughput() > 0 {
			ratio = fmt.Sprintf("%.2f", r.Throughput()/base.Throughput())
		}
		if r.CPUPerRequest() > 0 {
			cpu = ms(r.CPUPerRequest())
			if base := find(TargetBaseline, r.Mode); base != nil && r.Target == TargetBridge && base.CPUPerRequest() > 0 {
				cpuRatio = fmt.Sprintf("%.2f", float64(r.CPUPerRequest())/float64(base.CPUPerRequest()))
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t\n", r.Target, r.Mode, r.Requests, r.Errors, r.Throughput(),
			ms(r.Quantile(50)), ms(r.Quantile(95)), ms(r.Quantile(99)), added50, added99, ratio, cpu, cpuRatio)
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

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's CPU times: 100
// on every Linux the bench runs on (sysconf(_SC_CLK_TCK)).
const clockTicks = 100

// ReadCPU reads pid's user and system CPU time so far, from
// /proc/<pid>/stat (Linux only; 10 ms resolution).
func ReadCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	d, err := statCPU(string(data))
	if err != nil {
		return 0, fmt.Errorf("/proc/%d/stat: %w", pid, err)
	}
	return d, nil
}

// statCPU is utime + stime of a /proc/<pid>/stat line. The command name,
// in parentheses, may hold spaces and parentheses: fields count from
// after its last ")"; utime and stime are fields 14 and 15.
func statCPU(stat string) (time.Duration, error) {
	i := strings.LastIndexByte(stat, ')')
	if i < 0 {
		return 0, errors.New("no command name")
	}
	f := strings.Fields(stat[i+1:])
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name", len(f))
	}
	var ticks int64
	for _, v := range f[11:13] {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return 0, err
		}
		ticks += n
	}
	return time.Duration(ticks) * time.Second / clockTicks, nil
}

// MiB formats n bytes in MiB.
func MiB(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }

// BatchProgress is how far a batch got while interactive load ran beside
// it, from the batch's own request counts.
type BatchProgress struct {
	Lines int64 // lines in the batch
	// WindowDone is how many lines finished (completed or failed) during
	// the measured window of Window; Throughout says the batch was still
	// running when the window ended, so the whole window ran beside it.
	WindowDone int64
	Window     time.Duration
	Throughout bool
	// SlotsMean and SlotsMax are the worker's busy slots (jobs in flight)
	// sampled during the window, of Slots.
	SlotsMean, SlotsMax float64
	Slots               int
	// Status and the counts are the batch's at its end; OutputLines is the
	// number of lines in its output file. Elapsed runs from its submission
	// to its end.
	Status            string
	Completed, Failed int64
	OutputLines       int64
	Elapsed           time.Duration
}

// WriteMixTable prints interactive latency with no other load (alone) and
// beside a batch (during), the latency the batch added (during minus
// alone) and how the batch progressed. "queued" columns are the quantiles
// of the results' HeaderMs (the time a call waited in the queue).
func WriteMixTable(w io.Writer, alone, during *Result, b BatchProgress) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "interactive\trequests\terrors\treq/s\tp50\tp95\tp99\tqueued p50\tqueued p99\t")
	for _, r := range []struct {
		name string
		res  *Result
	}{{"alone", alone}, {"during batch", during}} {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.0f\t%s\t%s\t%s\t%s\t%s\t\n", r.name, r.res.Requests, r.res.Errors, r.res.Throughput(),
			ms(r.res.Quantile(50)), ms(r.res.Quantile(95)), ms(r.res.Quantile(99)), ms(r.res.HeaderQuantile(50)), ms(r.res.HeaderQuantile(99)))
	}
	signed := func(d time.Duration) string {
		if d < 0 {
			return ms(d)
		}
		return "+" + ms(d)
	}
	added := func(q float64) string { return signed(during.Quantile(q) - alone.Quantile(q)) }
	addedQueued := func(q float64) string { return signed(during.HeaderQuantile(q) - alone.HeaderQuantile(q)) }
	fmt.Fprintf(tw, "added by the batch\t\t\t\t%s\t%s\t%s\t%s\t%s\t\n", added(50), added(95), added(99), addedQueued(50), addedQueued(99))
	if err := tw.Flush(); err != nil {
		return err
	}
	throughout := "yes"
	if !b.Throughout {
		throughout = "no: it ended first, so part of the window ran without it"
	}
	fmt.Fprintf(w, "batch during the window: %d of %d lines done in %s (%s lines/s); still running at its end: %s\n",
		b.WindowDone, b.Lines, b.Window.Round(time.Millisecond), perSecond(b.WindowDone, b.Window), throughout)
	fmt.Fprintf(w, "worker slots busy during the window: mean %.1f, max %.0f of %d\n", b.SlotsMean, b.SlotsMax, b.Slots)
	_, err := fmt.Fprintf(w, "batch at its end: %s, %d completed, %d failed of %d; output file %d lines; %s after submission (%s lines/s)\n",
		b.Status, b.Completed, b.Failed, b.Lines, b.OutputLines, b.Elapsed.Round(time.Millisecond), perSecond(b.Completed+b.Failed, b.Elapsed))
	return err
}

// perSecond formats n per d with one decimal.
func perSecond(n int64, d time.Duration) string {
	if d <= 0 {
		return "0.0"
	}
	return strconv.FormatFloat(float64(n)/d.Seconds(), 'f', 1, 64)
}
