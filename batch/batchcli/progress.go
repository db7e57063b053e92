package batchcli

import (
	"fmt"
	"io"
	"os"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"
)

// progress shows a batch's progress: a bar on a terminal, else a plain
// line whenever the counts or the status change.
type progress struct {
	w     io.Writer
	bar   *progressbar.ProgressBar
	start time.Time
	last  string
	seen0 int64 // done when following started, for the rate
}

func newProgress(w io.Writer, b Batch) *progress {
	p := &progress{w: w, start: time.Now(), seen0: b.Done()}
	if f, ok := w.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
		p.bar = progressbar.NewOptions64(max(b.Counts.Total, 1),
			progressbar.OptionSetWriter(w),
			progressbar.OptionShowCount(),
			progressbar.OptionShowIts(),
			progressbar.OptionSetItsString("req"),
			progressbar.OptionSetPredictTime(true),
			progressbar.OptionFullWidth(),
			progressbar.OptionThrottle(100*time.Millisecond),
		)
	}
	return p
}

func (p *progress) update(b Batch) {
	done := b.Done()
	if p.bar != nil {
		if b.Counts.Total > 0 && p.bar.GetMax64() != b.Counts.Total {
			p.bar.ChangeMax64(b.Counts.Total)
		}
		p.bar.Describe(fmt.Sprintf("%s %s, %d failed", b.ID, b.Status, b.Counts.Failed))
		_ = p.bar.Set64(done)
		return
	}
	line := fmt.Sprintf("%s %s: %d/%d done, %d failed", b.ID, b.Status, done, b.Counts.Total, b.Counts.Failed)
	if line == p.last {
		return
	}
	p.last = line
	if el := time.Since(p.start); el > time.Second && done > p.seen0 {
		rate := float64(done-p.seen0) / el.Seconds()
		line += fmt.Sprintf(", %.1f/s", rate)
		if left := b.Counts.Total - done; left > 0 && !b.Final() {
			line += fmt.Sprintf(", ETA %s", time.Duration(float64(left)/rate*float64(time.Second)).Round(time.Second))
		}
	}
	fmt.Fprintln(p.w, line)
}

func (p *progress) close() {
	if p.bar != nil {
		_ = p.bar.Finish()
		fmt.Fprintln(p.w)
	}
}
