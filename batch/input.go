package batch

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
)

// lineReader reads a JSONL file's lines in order, cut as splitLines cuts
// them (without "\n" or "\r\n"; blank lines count; no line after a final
// "\n"), holding at most max bytes of one line: so a runner's memory
// does not grow with the file's size, nor with an overlong line's.
type lineReader struct {
	br  *bufio.Reader
	max int
	buf []byte
	n   int // the index of the line next returns
}

func newLineReader(r io.Reader, max int) *lineReader {
	return &lineReader{br: bufio.NewReaderSize(r, 64<<10), max: max}
}

// next returns the next line and its index (from 0), or io.EOF after the
// last. A line longer than max comes back empty with tooLong set: its
// bytes were read past, not kept. The line is valid until the next call.
func (r *lineReader) next() (line []byte, index int, tooLong bool, err error) {
	if cap(r.buf) > 4<<20 {
		r.buf = nil // a large line's buffer is not kept for the small ones after it
	}
	r.buf = r.buf[:0]
	read := 0
	for {
		chunk, err := r.br.ReadSlice('\n')
		read += len(chunk)
		if !tooLong {
			if len(r.buf)+len(chunk) > r.max+2 { // "\r\n" is not the line's
				tooLong, r.buf = true, r.buf[:0]
			} else {
				r.buf = append(r.buf, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && read == 0 {
			return nil, 0, false, io.EOF
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, false, err
		}
		break
	}
	line = bytes.TrimSuffix(bytes.TrimSuffix(r.buf, []byte("\n")), []byte("\r"))
	if tooLong || len(line) > r.max {
		tooLong, line = true, nil
	}
	index = r.n
	r.n++
	return line, index, tooLong, nil
}

// errLineTooLong is inputReader.line's error for a line over its limit.
var errLineTooLong = errors.New("the line is over the line limit")

// inputReader reads the input file's lines for progress, which asks for
// them in file order: it keeps one reader of the object positioned at the
// last line read, and opens it again (skipping to the line) only when it
// failed, or for a line before it. The last line returned is kept until
// the next is read, so asking for it again (a line the queue did not take
// yet, offered again after a pause) reads nothing.
type inputReader struct {
	store  *Store
	fileID string
	max    int

	obj io.ReadCloser // a chunkReader: holds one chunk, nothing on the server
	lr  *lineReader

	last  []byte // the last line returned, while lr is open (lr's buffer)
	lastN int    // its index
}

// line returns the line with index n (valid until the next call).
func (in *inputReader) line(ctx context.Context, n int) ([]byte, error) {
	if in.lr != nil && in.last != nil && in.lastN == n {
		return in.last, nil
	}
	if in.lr != nil && in.lr.n > n {
		in.close()
	}
	if in.lr == nil {
		// ctx is progress's: it lives as long as the batch is driven.
		obj, err := in.store.openObject(ctx, in.fileID)
		if err != nil {
			return nil, fmt.Errorf("read input file %s: %w", in.fileID, err)
		}
		in.obj, in.lr = obj, newLineReader(obj, in.max)
	}
	in.last = nil
	for {
		raw, i, tooLong, err := in.lr.next()
		if errors.Is(err, io.EOF) {
			in.close()
			return nil, fmt.Errorf("line %d is not in the input file %s", n, in.fileID)
		}
		if err != nil {
			in.close()
			return nil, fmt.Errorf("read input file %s: %w", in.fileID, err)
		}
		if i < n {
			continue
		}
		if tooLong {
			// The plan refused it: never asked for.
			return nil, fmt.Errorf("line %d of the input file %s: %w", n, in.fileID, errLineTooLong)
		}
		if raw == nil {
			raw = []byte{}
		}
		in.last, in.lastN = raw, i
		return raw, nil
	}
}

// close drops the reader; the next line opens the object again.
func (in *inputReader) close() {
	if in.obj != nil {
		_ = in.obj.Close()
	}
	in.obj, in.lr, in.last = nil, nil, nil
}
