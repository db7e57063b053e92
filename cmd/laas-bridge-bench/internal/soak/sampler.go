package soak

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/laas-bridge/laas-bridge/cmd/laas-bridge-bench/internal/load"
)

// Proc is a process the sampler watches.
type Proc struct {
	Name string
	// Current returns the process's pid now (a restarted worker has a new
	// one) and the URL of its Prometheus metrics ("": none, no goroutine
	// count).
	Current func() (pid int, metricsURL string)
}

// Sample is one reading of every Proc, in the Sampler's order; -1 where a
// reading failed (a process being restarted).
type Sample struct {
	At         time.Duration // since the sampler started
	PIDs       []int
	RSS        []int64 // bytes
	Goroutines []int64
	Summary    Summary // the ledger's, at the time
}

// Sampler reads every Proc's resident memory (VmRSS) and goroutines
// (go_goroutines) every Every and prints a row per reading.
type Sampler struct {
	Procs  []Proc
	Every  time.Duration
	Ledger *Ledger
	Out    io.Writer

	mu      sync.Mutex
	samples []Sample
}

const colWidth = 9

// Run samples until ctx ends, printing the table's header first.
func (s *Sampler) Run(ctx context.Context) {
	var hdr strings.Builder
	fmt.Fprintf(&hdr, "%8s", "time")
	for _, p := range s.Procs {
		fmt.Fprintf(&hdr, " %*s", colWidth, trim(p.Name, colWidth))
		if _, u := p.Current(); u != "" {
			fmt.Fprintf(&hdr, " %5s", "gor")
		}
	}
	fmt.Fprintf(&hdr, " %9s %9s %5s %5s\n", "answered", "in flight", "lost", "dup")
	fmt.Fprintf(s.Out, "resident memory (MiB; * restarted since the previous row) and goroutines (gor), every %s:\n%s", s.Every, hdr.String())
	start := time.Now()
	tick := time.NewTicker(s.Every)
	defer tick.Stop()
	for {
		s.sample(ctx, time.Since(start))
		select {
		case <-tick.C:
		case <-ctx.Done():
			return
		}
	}
}

func trim(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// sample reads every Proc once and prints the row.
func (s *Sampler) sample(ctx context.Context, at time.Duration) {
	smp := Sample{At: at}
	for _, p := range s.Procs {
		pid, u := p.Current()
		rss, gor := int64(-1), int64(-1)
		if m, err := load.ReadMemory(pid); err == nil && m.RSS > 0 {
			rss = m.RSS
		}
		if u != "" {
			if v, err := ReadGauge(ctx, u, "go_goroutines"); err == nil {
				gor = int64(v)
			}
		}
		smp.PIDs, smp.RSS, smp.Goroutines = append(smp.PIDs, pid), append(smp.RSS, rss), append(smp.Goroutines, gor)
	}
	if s.Ledger != nil {
		smp.Summary = s.Ledger.Summary()
	}
	s.mu.Lock()
	var prev *Sample
	if len(s.samples) > 0 {
		prev = &s.samples[len(s.samples)-1]
	}
	s.samples = append(s.samples, smp)
	s.mu.Unlock()

	var row strings.Builder
	fmt.Fprintf(&row, "%8s", at.Round(time.Second))
	for i, p := range s.Procs {
		cell := "-"
		if smp.RSS[i] >= 0 {
			cell = fmt.Sprintf("%.1f", float64(smp.RSS[i])/(1<<20))
		}
		if prev != nil && prev.PIDs[i] != smp.PIDs[i] {
			cell += "*"
		}
		fmt.Fprintf(&row, " %*s", colWidth, cell)
		if _, u := p.Current(); u != "" {
			g := "-"
			if smp.Goroutines[i] >= 0 {
				g = fmt.Sprint(smp.Goroutines[i])
			}
			fmt.Fprintf(&row, " %5s", g)
		}
	}
	t := smp.Summary.Total
	fmt.Fprintf(&row, " %9d %9d %5d %5d\n", t.Answered, smp.Summary.InFlight, t.Lost, smp.Summary.Duplicated+t.Crossed)
	fmt.Fprint(s.Out, row.String())
}

// Samples returns the readings so far.
func (s *Sampler) Samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Sample(nil), s.samples...)
}

// Trend is how a process's memory and goroutines moved: the mean of the
// first quarter of the readings against the mean of the last quarter.
type Trend struct {
	Name                 string
	FirstRSS, LastRSS    float64 // bytes
	FirstGor, LastGor    float64 // -1 without a goroutine count
	Restarts             int     // pid changes between readings
	Readings, Quarter    int
	HasGoroutines, Known bool
}

// Trends computes every Proc's Trend; a process with fewer than 4
// readings has Known false.
func (s *Sampler) Trends() []Trend {
	samples := s.Samples()
	var out []Trend
	for i, p := range s.Procs {
		tr := Trend{Name: p.Name, FirstGor: -1, LastGor: -1}
		var rss, gor []float64
		for j, smp := range samples {
			if j > 0 && samples[j-1].PIDs[i] != smp.PIDs[i] {
				tr.Restarts++
			}
			if smp.RSS[i] >= 0 {
				rss = append(rss, float64(smp.RSS[i]))
			}
			if smp.Goroutines[i] >= 0 {
				gor = append(gor, float64(smp.Goroutines[i]))
			}
		}
		tr.Readings = len(rss)
		if len(rss) >= 4 {
			tr.Known, tr.Quarter = true, len(rss)/4
			tr.FirstRSS, tr.LastRSS = mean(rss[:tr.Quarter]), mean(rss[len(rss)-tr.Quarter:])
		}
		if len(gor) >= 4 {
			q := len(gor) / 4
			tr.HasGoroutines = true
			tr.FirstGor, tr.LastGor = mean(gor[:q]), mean(gor[len(gor)-q:])
		}
		out = append(out, tr)
	}
	return out
}

func mean(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += x
	}
	return s / float64(len(xs))
}

// WriteTrends prints each process's Trend.
func (s *Sampler) WriteTrends(w io.Writer) {
	fmt.Fprintln(w, "memory trend (mean of the first quarter of the readings -> mean of the last quarter):")
	for _, tr := range s.Trends() {
		if !tr.Known {
			fmt.Fprintf(w, "  %-12s %d readings: too few for a trend\n", tr.Name, tr.Readings)
			continue
		}
		d := tr.LastRSS - tr.FirstRSS
		fmt.Fprintf(w, "  %-12s RSS %6.1f -> %6.1f MiB (%+.1f MiB, %+.0f%%)", tr.Name, tr.FirstRSS/(1<<20), tr.LastRSS/(1<<20), d/(1<<20), 100*d/tr.FirstRSS)
		if tr.HasGoroutines {
			fmt.Fprintf(w, "; goroutines %.0f -> %.0f", tr.FirstGor, tr.LastGor)
		}
		if tr.Restarts > 0 {
			fmt.Fprintf(w, "; restarted %d times (a fresh process after each)", tr.Restarts)
		}
		fmt.Fprintln(w)
	}
}

// ReadGauge reads the single series of gauge name from a Prometheus text
// endpoint, within 5 s.
func ReadGauge(ctx context.Context, url, name string) (float64, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return 0, err
	}
	mf, ok := mfs[name]
	if !ok || len(mf.GetMetric()) != 1 {
		return 0, fmt.Errorf("%s: no single series %s", url, name)
	}
	return mf.GetMetric()[0].GetGauge().GetValue(), nil
}
