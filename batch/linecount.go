package batch

import (
	"errors"
	"io"

	"github.com/laas-bridge/laas-bridge/schema"
)

// LineCounter passes a batch input file through, counting its bytes and non-blank
// lines, and fails once either is over the limit.
type LineCounter struct {
	r     io.Reader
	limit int64
	// Bytes read so far.
	Bytes int64
	// Over and TooMany tell why Read failed: the size or the line limit.
	Over, TooMany bool

	blank    bool // the current line has nothing but white space so far
	started  bool
	nonBlank int
}

// NewLineCounter counts r, failing past limit bytes or MaxBatchLines lines.
func NewLineCounter(r io.Reader, limit int64) *LineCounter {
	return &LineCounter{r: r, limit: limit}
}

func (l *LineCounter) Read(p []byte) (int, error) {
	n, err := l.r.Read(p)
	l.Bytes += int64(n)
	for _, b := range p[:n] {
		switch b {
		case '\n':
			if l.started && !l.blank {
				l.nonBlank++
			}
			l.started, l.blank = false, true
		case ' ', '\t', '\r':
			if !l.started {
				l.started, l.blank = true, true
			}
		default:
			l.started, l.blank = true, false
		}
	}
	if l.Bytes > l.limit {
		l.Over = true
		return n, errors.New("file over the size limit")
	}
	if l.nonBlank > schema.MaxBatchLines {
		l.TooMany = true
		return n, errors.New("file over the line limit")
	}
	if errors.Is(err, io.EOF) && l.Lines() > schema.MaxBatchLines {
		l.TooMany = true
		return n, errors.New("file over the line limit")
	}
	return n, err
}

// Lines counts the non-blank lines read so far, the last one included
// when it has no "\n".
func (l *LineCounter) Lines() int {
	if l.started && !l.blank {
		return l.nonBlank + 1
	}
	return l.nonBlank
}
