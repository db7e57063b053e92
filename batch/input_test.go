package batch

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/laas-bridge/laas-bridge/schema"
)

// The line reader cuts a file as splitLines does, whatever the reads'
// sizes, and past its limit skips a line without keeping it.
func TestLineReader(t *testing.T) {
	long := strings.Repeat("y", 100<<10) // longer than the reader's buffer
	for _, tc := range []struct {
		name, data string
		max        int
	}{
		{name: "empty", data: "", max: 10},
		{name: "one line", data: "a\n", max: 10},
		{name: "no final newline", data: "a\nb", max: 10},
		{name: "blank lines kept", data: "a\n\n \nb\n\n", max: 10},
		{name: "crlf", data: "a\r\nb\r\n", max: 10},
		{name: "exactly max", data: "abc\r\nde\n", max: 3},
		{name: "one over max", data: "abcd\nde\nxyz", max: 3},
		{name: "long lines within max", data: long + "\n" + long, max: len(long)},
		{name: "long lines over max", data: "a\n" + long + "\n\n" + long, max: 10},
	} {
		for _, rd := range []struct {
			name string
			wrap func(io.Reader) io.Reader
		}{
			{"whole", func(r io.Reader) io.Reader { return r }},
			{"byte by byte", iotest.OneByteReader},
			{"EOF with the data", iotest.DataErrReader},
		} {
			t.Run(tc.name+"/"+rd.name, func(t *testing.T) {
				want := splitLines([]byte(tc.data))
				lr := newLineReader(rd.wrap(strings.NewReader(tc.data)), tc.max)
				var got []string
				for {
					line, i, tooLong, err := lr.next()
					if errors.Is(err, io.EOF) {
						break
					}
					if err != nil {
						t.Fatal(err)
					}
					if i != len(got) {
						t.Fatalf("line index %d; want %d", i, len(got))
					}
					over := len(want[i]) > tc.max
					if tooLong != over || (tooLong && line != nil) {
						t.Errorf("line %d: tooLong %v, %d bytes; want tooLong %v", i, tooLong, len(line), over)
					}
					if !tooLong {
						got = append(got, string(line))
					} else {
						got = append(got, string(want[i])) // compared by length above
					}
				}
				if len(got) != len(want) {
					t.Fatalf("%d lines; want %d", len(got), len(want))
				}
				for i := range want {
					if got[i] != string(want[i]) {
						t.Errorf("line %d: %.20q; want %.20q", i, got[i], want[i])
					}
				}
			})
		}
	}
}

// endless yields n bytes of 'x', then tail.
type endless struct {
	n    int64
	tail *strings.Reader
}

func (e *endless) Read(p []byte) (int, error) {
	if e.n <= 0 {
		return e.tail.Read(p)
	}
	k := min(int64(len(p)), e.n)
	for i := range p[:k] {
		p[i] = 'x'
	}
	e.n -= k
	return int(k), nil
}

// A line far longer than the limit is read past, not into memory: 256 MiB
// of one line cost the reader a few of its buffers, and the line after it
// is read as usual.
func TestLineReaderSkipsLongLineInBoundedMemory(t *testing.T) {
	lr := newLineReader(&endless{n: 256 << 20, tail: strings.NewReader("\n{}\n")}, 1<<10)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, _, tooLong, err := lr.next()
	runtime.ReadMemStats(&after)
	if err != nil || !tooLong {
		t.Fatalf("the long line: tooLong %v, %v; want tooLong", tooLong, err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 1<<20 {
		t.Errorf("reading past a 256 MiB line allocated %d bytes; want under 1 MiB", alloc)
	}
	line, i, tooLong, err := lr.next()
	if err != nil || tooLong || i != 1 || string(line) != "{}" {
		t.Errorf("the line after: %q (index %d, tooLong %v, %v); want {} at 1", line, i, tooLong, err)
	}
}

// The runner's reader of the input file returns the lines asked for in
// file order from one reader, and opens the file again for an earlier
// line and after its reader failed.
func TestInputReader(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	var lines []string
	for i := range 8 {
		// Each line longer than the reader's buffer: a line is never
		// read ahead whole.
		lines = append(lines, fmt.Sprintf(`{"n":%d,"pad":%q}`, i, strings.Repeat("p", 70<<10)))
	}
	data := strings.Join(lines, "\n") + "\n"
	file, err := f.store.PutFile(ctx, NewFileID(), "", "input.jsonl", schema.PurposeBatch, len(lines), strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	in := &inputReader{store: f.store, fileID: file.ID, max: 1 << 20}
	defer in.close()
	read := func(n int) {
		t.Helper()
		got, err := in.line(ctx, n)
		if err != nil || string(got) != lines[n] {
			t.Fatalf("line %d: %.30q, %v; want %.30q", n, got, err, lines[n])
		}
	}
	read(1)
	first := in.obj
	read(3)
	read(4)
	if in.obj != first {
		t.Error("a later line opened the file again; want the same reader")
	}
	read(2)
	if in.obj == first {
		t.Error("an earlier line was read from the reader already past it")
	}
	// The reader fails (as when NATS goes away): the next line opens the
	// file again and skips to it.
	_ = in.obj.Close()
	if _, err := in.line(ctx, 5); err == nil {
		t.Fatal("a line from a closed reader came back without an error")
	}
	read(5)
	read(7)
	if _, err := in.line(ctx, 8); err == nil {
		t.Error("line 8 of 8 came back without an error")
	}
}

// The store's chunk reader returns an object's bytes exactly, over many
// chunks, holding one at a time; a missing object is ErrNotFound.
func TestChunkReader(t *testing.T) {
	f := newFixture(t)
	ctx := testCtx(t)
	data := make([]byte, 1<<20+12345) // eight 128 KiB chunks and a part
	for i := range data {
		data[i] = byte(i * 7 % 251)
	}
	file, err := f.store.PutFile(ctx, NewFileID(), "", "input.jsonl", schema.PurposeBatch, 0, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	r, err := f.store.openObject(ctx, file.ID)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(iotest.OneByteReader(io.LimitReader(r, 100)))
	if err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if got = append(got, rest...); !bytes.Equal(got, data) {
		t.Errorf("read %d bytes that differ from the %d stored", len(got), len(data))
	}
	if _, err := f.store.openObject(ctx, NewFileID()); !errors.Is(err, ErrNotFound) {
		t.Errorf("a missing object: %v; want ErrNotFound", err)
	}
}
