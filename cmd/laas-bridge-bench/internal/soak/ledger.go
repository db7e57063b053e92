package soak

import (
	"fmt"
	"io"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Kind is one sort of traffic.
type Kind string

// The kinds of traffic, in the order the report lists them.
const (
	KindChat      Kind = "chat"
	KindStream    Kind = "stream"
	KindJob       Kind = "job"
	KindHangup    Kind = "hangup"
	KindBatchLine Kind = "batch line"
)

var kinds = []Kind{KindChat, KindStream, KindJob, KindHangup, KindBatchLine}

// Record is what one request got.
type Record struct {
	Kind Kind
	// Text is the request's own text; Answer the text the answer it got
	// echoed ("" when it got none).
	Text, Answer string
	// Refused: turned away before it was accepted (429, or 503
	// server_overloaded): not lost, never queued.
	Refused bool
	// HungUp: the caller left on purpose before an answer came.
	HungUp bool
	// Problem says what went wrong when there is no Answer (a status and
	// the start of its body, a cut stream, a job that failed).
	Problem string
	Latency time.Duration
}

// Counts are the outcomes of one kind of request.
type Counts struct {
	Sent     int64 // recorded
	Answered int64 // their own answer
	Lost     int64 // accepted, no answer of their own
	Crossed  int64 // an answer holding another request's text
	Refused  int64
	HungUp   int64
}

// Ledger collects Records and checks them: every accepted request got its
// own answer, and no answer was delivered twice. Safe for concurrent use.
type Ledger struct {
	mu        sync.Mutex
	counts    map[Kind]*Counts
	latency   map[Kind]*hdrhistogram.Histogram
	delivered map[string]int // answer text -> deliveries
	problems  []string       // the first maxProblems, for the report
	inFlight  int64
}

// maxProblems is how many problems the report quotes.
const maxProblems = 20

// NewLedger returns an empty ledger.
func NewLedger() *Ledger {
	l := &Ledger{counts: map[Kind]*Counts{}, latency: map[Kind]*hdrhistogram.Histogram{}, delivered: map[string]int{}}
	for _, k := range kinds {
		l.counts[k] = &Counts{}
		l.latency[k] = hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3)
	}
	return l
}

// start counts a request in flight until its Record.
func (l *Ledger) start() {
	l.mu.Lock()
	l.inFlight++
	l.mu.Unlock()
}

// finish is Add for a request counted by start.
func (l *Ledger) finish(r Record) {
	l.mu.Lock()
	l.inFlight--
	l.mu.Unlock()
	l.Add(r)
}

// Add records what one request got.
func (l *Ledger) Add(r Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.counts[r.Kind]
	c.Sent++
	switch {
	case r.Answer != "":
		l.delivered[r.Answer]++
		if r.Answer != r.Text {
			c.Crossed++
			l.problem(fmt.Sprintf("%s %q got the answer of %q", r.Kind, r.Text, r.Answer))
			return
		}
		c.Answered++
		_ = l.latency[r.Kind].RecordValue(max(1, r.Latency.Microseconds()))
		if n := l.delivered[r.Answer]; n > 1 {
			l.problem(fmt.Sprintf("%s %q answered %d times", r.Kind, r.Text, n))
		}
	case r.HungUp:
		c.HungUp++
	case r.Refused:
		c.Refused++
		l.problem(fmt.Sprintf("%s %q refused (not lost): %s", r.Kind, r.Text, r.Problem))
	default:
		c.Lost++
		l.problem(fmt.Sprintf("%s %q lost: %s", r.Kind, r.Text, r.Problem))
	}
}

func (l *Ledger) problem(s string) {
	if len(l.problems) < maxProblems {
		l.problems = append(l.problems, s)
	}
}

// Summary is the ledger's totals.
type Summary struct {
	ByKind map[Kind]Counts
	Total  Counts
	// Duplicated counts the deliveries of an answer after its first.
	Duplicated int64
	InFlight   int64
	Problems   []string
}

// OK reports whether nothing was lost, crossed or duplicated.
func (s Summary) OK() bool { return s.Total.Lost == 0 && s.Total.Crossed == 0 && s.Duplicated == 0 }

// Summary returns the totals so far.
func (l *Ledger) Summary() Summary {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := Summary{ByKind: map[Kind]Counts{}, InFlight: l.inFlight, Problems: append([]string(nil), l.problems...)}
	for k, c := range l.counts {
		s.ByKind[k] = *c
		s.Total.Sent += c.Sent
		s.Total.Answered += c.Answered
		s.Total.Lost += c.Lost
		s.Total.Crossed += c.Crossed
		s.Total.Refused += c.Refused
		s.Total.HungUp += c.HungUp
	}
	for _, n := range l.delivered {
		s.Duplicated += int64(n - 1)
	}
	return s
}

// WriteCounts prints the outcomes by kind, with the latency of the
// answered requests (for a job, from its submission to its result; for a
// batch line, the batch's), and the first problems.
func (l *Ledger) WriteCounts(w io.Writer) error {
	s := l.Summary()
	l.mu.Lock()
	defer l.mu.Unlock()
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "kind\tsent\tanswered\tlost\tcrossed\trefused\thung up\tp50\tp99\tmax\t")
	row := func(name string, c Counts, h *hdrhistogram.Histogram) {
		q := func(p float64) string {
			if h == nil || h.TotalCount() == 0 {
				return "-"
			}
			if p == 100 {
				return fmtDur(time.Duration(h.Max()) * time.Microsecond)
			}
			return fmtDur(time.Duration(h.ValueAtQuantile(p)) * time.Microsecond)
		}
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t\n", name, c.Sent, c.Answered, c.Lost, c.Crossed, c.Refused, c.HungUp, q(50), q(99), q(100))
	}
	for _, k := range kinds {
		row(string(k), s.ByKind[k], l.latency[k])
	}
	row("all", s.Total, nil)
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(w, "answers delivered more than once: %d extra deliveries\n", s.Duplicated)
	if len(s.Problems) > 0 {
		fmt.Fprintf(w, "first problems:\n  %s\n", strings.Join(s.Problems, "\n  "))
	}
	return nil
}

// fmtDur rounds d for a table: milliseconds below 10 s, else tenths of a
// second.
func fmtDur(d time.Duration) string {
	if d < 10*time.Second {
		return d.Round(time.Millisecond).String()
	}
	return d.Round(100 * time.Millisecond).String()
}

// answerText is the text a mock answer echoes: the content after the
// mock's "mock[<hash>]: " prefix (the whole content without one).
func answerText(content string) string {
	if strings.HasPrefix(content, "mock[") {
		if _, after, ok := strings.Cut(content, "]: "); ok {
			return after
		}
	}
	return content
}
