package multimodal

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/pdfcpu/pdfcpu/pkg/filter"
	"github.com/pdfcpu/pdfcpu/pkg/pdfcpu/model"
	"github.com/pdfcpu/pdfcpu/pkg/pdfcpu/types"
)

// The budget of one PDF's page count. pdfcpu reads a whole document into
// memory (every object, and the prolog of every object stream) before the
// page tree can be walked, and a small file can make that work huge: a
// Flate stream inflates about 1000:1, an object stream's prolog is split
// into one Go value per entry, and a cross-reference table may name one
// object many times. The limits below bound each step and the deadline
// bounds them all; real documents stay far below them (pdfcpu's own test
// PDFs, up to 3 MB and 10,000 objects: at most 100 objects and a 1 KB prolog
// per object stream, 71 object streams, 33 MiB allocated, 0.1 s).
const (
	// DocumentCheckTimeout is how long the page count of a PDF of up to
	// 4 MB may take, with a second more for each further 4 MB (9 s at 32
	// MB: reading a large file is slow on a busy machine); past it the PDF
	// is refused (CodeDocumentTooComplex). It bounds what the limits below
	// do not, such as pdfcpu repairing a damaged file line by line.
	DocumentCheckTimeout = time.Second
	// maxDecodedStream is the most one stream (an object stream, a
	// cross-reference stream) may inflate to; pdfcpu's default is 512 MiB.
	maxDecodedStream = 1 << 20
	// maxObjStmProlog and maxObjStmObjects bound one object stream's prolog
	// (/First, pdfcpu's default 16 MiB) and its object count (/N and the
	// prolog's pairs, default 1,000,000).
	maxObjStmProlog  = 16 << 10
	maxObjStmObjects = 512
	// maxObjects bounds the cross-reference entries (default 10,000,000)
	// and the objects written out in the file, counted before pdfcpu runs
	// (objectKeywords): pdfcpu repairs a file without a usable
	// cross-reference table by parsing every "N G obj" it finds, each
	// parse allocating some 40 KB of buffers and keeping the object, so
	// this count is what bounds the repair. 16,384 is more than a PDF of
	// 20 pages needs, and a repair of that many objects stays under the
	// deadline and about 64 MiB of live heap (TestDamagedDocumentBudget).
	maxObjects = 1 << 14
	// maxObjectStreams bounds the object streams, counted before pdfcpu
	// runs (objectStreams): pdfcpu splits the prolog of every one of them
	// into Go values before anything else.
	maxObjectStreams = 256
	// maxWalkObjectStreams bounds the object streams the page tree's nodes
	// may lie in: each is inflated whole when one of its objects is read
	// (pdfcpu's test documents: up to 18, for a tree of 59 pages).
	maxWalkObjectStreams = 64
	// maxSeeks bounds how often pdfcpu positions its reader (it reads
	// every object from its own offset, a few times at most), and
	// maxRepeatedSeeks how often it may go back to an offset it read
	// before: a cross-reference table that names one object stream under
	// many numbers makes pdfcpu read it, and split its prolog, each time.
	maxSeeks         = 4 * maxObjects
	maxRepeatedSeeks = 64
)

// checkTimeout is the deadline of the page count of a PDF of n bytes.
func checkTimeout(n int) time.Duration {
	return DocumentCheckTimeout + time.Duration(n/(4<<20))*time.Second
}

// errOverBudget is the cause of a CodeDocumentTooComplex refusal.
var errOverBudget = errors.New("the PDF reader went over its budget")

// readConfig is pdfcpu's configuration for reading an untrusted PDF: relaxed
// validation, as real-world PDFs need, no network, and the resource limits
// above. It is built here rather than by model.NewDefaultConfiguration,
// which installs a configuration directory, fonts and certificates under
// the user's home.
func readConfig() *model.Configuration {
	limits := model.DefaultResourceLimits()
	limits.MaxStreamBytes = MaxDocumentBytes
	limits.MaxDecodeBytes = maxDecodedStream
	limits.MaxObjectStreamFirst = maxObjStmProlog
	limits.MaxObjectStreamCount = maxObjStmObjects
	limits.MaxObjectCount = maxObjects
	limits.MaxXRefEntries = maxObjects
	return &model.Configuration{
		Reader15:       true,
		ValidationMode: model.ValidationRelaxed,
		Eol:            types.EolLF,
		Offline:        true,
		Limits:         limits,
	}
}

// budgetReader is the document as pdfcpu reads it. pdfcpu checks its
// context only in some of its loops; every step it takes starts by
// positioning its reader, so the reader is where the budget holds: once
// ctx ends or the seeks run out, every Read and Seek fails and pdfcpu
// returns at its next step. over records why.
type budgetReader struct {
	ctx      context.Context
	r        *bytes.Reader
	seeks    int
	repeated int
	offsets  map[int64]struct{}
	over     error
}

func newBudgetReader(ctx context.Context, data []byte) *budgetReader {
	return &budgetReader{ctx: ctx, r: bytes.NewReader(data), offsets: make(map[int64]struct{})}
}

func (b *budgetReader) check() error {
	if b.over == nil && b.ctx.Err() != nil {
		b.over = fmt.Errorf("%w: %w", errOverBudget, b.ctx.Err())
	}
	return b.over
}

func (b *budgetReader) Read(p []byte) (int, error) {
	if err := b.check(); err != nil {
		return 0, err
	}
	return b.r.Read(p)
}

func (b *budgetReader) Seek(offset int64, whence int) (int64, error) {
	if err := b.check(); err != nil {
		return 0, err
	}
	pos, err := b.r.Seek(offset, whence)
	if err != nil {
		return pos, err
	}
	if _, seen := b.offsets[pos]; seen {
		b.repeated++
	}
	b.offsets[pos] = struct{}{}
	switch b.seeks++; {
	case b.seeks > maxSeeks:
		b.over = fmt.Errorf("%w: it positioned its reader more than %d times", errOverBudget, maxSeeks)
	case b.repeated > maxRepeatedSeeks:
		b.over = fmt.Errorf("%w: it went back to an offset it had read more than %d times", errOverBudget, maxRepeatedSeeks)
	}
	return pos, b.over
}

// objectKeywords counts the keywords "obj" in data that are not the end
// of an "endobj": an upper bound on the objects pdfcpu parses when it
// repairs a damaged file, since it parses only a line holding such a
// keyword, each at most once (a reader sent back to an offset it read is
// stopped by maxRepeatedSeeks). Objects inside object streams hold none,
// and compressed bytes rarely do.
func objectKeywords(data []byte) int {
	return bytes.Count(data, []byte("obj")) - bytes.Count(data, []byte("endobj"))
}

// objectStreams counts the names /ObjStm in data, decoding #xx escapes as
// a PDF reader does. Every object stream's dictionary holds one in the
// clear (a stream's dictionary is never compressed or encrypted), so this
// is an upper bound on the object streams; names inside streams and
// strings count too. A name ends at any byte that ends it for pdfcpu, and
// at a few more, which can only count more.
func objectStreams(data []byte) int {
	n := 0
	for {
		i := bytes.IndexByte(data, '/')
		if i < 0 {
			return n
		}
		data = data[i+1:]
		end := 0
		for end < len(data) && !endsName(data[end]) {
			end++
		}
		if nameIs(data[:end], "ObjStm") {
			n++
		}
		data = data[end:]
	}
}

func endsName(c byte) bool { return c <= ' ' || c >= 0x7f || strings.IndexByte("/<>()[]{}%", c) >= 0 }

// nameIs reports whether the raw name decodes to want.
func nameIs(raw []byte, want string) bool {
	j := 0
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == '#' && i+2 < len(raw) && isHex(raw[i+1]) && isHex(raw[i+2]) {
			c = unhex(raw[i+1])<<4 | unhex(raw[i+2])
			i += 2
		}
		if j >= len(want) || want[j] != c {
			return false
		}
		j++
	}
	return j == len(want)
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c <= 'F':
		return c - 'A' + 10
	}
	return c - 'a' + 10
}

var _ io.ReadSeeker = (*budgetReader)(nil)

// tooComplex reports whether err, from reading a PDF, means the PDF needs
// more than the budget rather than that it is damaged. pdfcpu (v0.15.0)
// wraps a sentinel error for some of its limits only; the others (an object
// stream's /First or /N, its prolog's object count, a cross-reference
// stream's /Size or entries) are plain errors worded "... exceeds limit
// N", so that wording is matched too, and TestDocumentTooComplex pins it
// for each limit.
func tooComplex(err error) bool {
	return err != nil && (errors.Is(err, errOverBudget) || errors.Is(err, filter.ErrDecodeLimitExceeded) ||
		errors.Is(err, model.ErrMaxRecursionDepthExceeded) || strings.Contains(err.Error(), " exceeds limit "))
}
