package batch

import (
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/laas-bridge/laas-bridge/schema"
)

func TestLineCounter(t *testing.T) {
	maxLines := strings.Repeat("{}\n", schema.MaxBatchLines)
	for _, tc := range []struct {
		name          string
		data          string
		limit         int64
		lines         int
		over, tooMany bool
	}{
		{name: "empty", data: "", limit: 10},
		{name: "blank lines only", data: "\n \n\t\r\n", limit: 10},
		{name: "blank lines between", data: "a\n\n  \nb\n", limit: 100, lines: 2},
		{name: "last line without newline", data: "a\nb", limit: 100, lines: 2},
		{name: "crlf", data: "a\r\nb\r\n", limit: 100, lines: 2},
		{name: "white space around text", data: "  x  \n\tx\n", limit: 100, lines: 2},
		{name: "white space after the last newline", data: "a\n  ", limit: 100, lines: 1},
		{name: "exactly the size limit", data: "ab\ncd", limit: 5, lines: 2},
		{name: "one byte over the size limit", data: "ab\ncde", limit: 5, over: true},
		{name: "exactly the line limit", data: maxLines, limit: schema.MaxBatchFileBytes, lines: schema.MaxBatchLines},
		{name: "the line limit and blank lines", data: maxLines + "\n \n", limit: schema.MaxBatchFileBytes, lines: schema.MaxBatchLines},
		{name: "one line over the limit", data: maxLines + "{}\n", limit: schema.MaxBatchFileBytes, tooMany: true},
		{name: "one line over the limit, without newline", data: maxLines + "{}", limit: schema.MaxBatchFileBytes, tooMany: true},
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
				c := NewLineCounter(rd.wrap(strings.NewReader(tc.data)), tc.limit)
				got, err := io.ReadAll(c)
				if tc.over || tc.tooMany {
					if err == nil {
						t.Fatalf("read %d bytes without an error; want one (over %v, too many %v)", len(got), tc.over, tc.tooMany)
					}
					if c.Over != tc.over || c.TooMany != tc.tooMany {
						t.Errorf("Over %v, TooMany %v; want %v, %v (error %v)", c.Over, c.TooMany, tc.over, tc.tooMany, err)
					}
					return
				}
				if err != nil {
					t.Fatalf("read: %v", err)
				}
				if string(got) != tc.data || c.Bytes != int64(len(tc.data)) {
					t.Errorf("passed %d bytes, counted %d; want the %d bytes read", len(got), c.Bytes, len(tc.data))
				}
				if c.Lines() != tc.lines || c.Over || c.TooMany {
					t.Errorf("Lines %d, Over %v, TooMany %v; want %d lines, neither", c.Lines(), c.Over, c.TooMany, tc.lines)
				}
				if n := CountLines([]byte(tc.data)); n != c.Lines() {
					t.Errorf("CountLines %d, LineCounter %d: the upload and the runner count differently", n, c.Lines())
				}
			})
		}
	}
}
