package batchcli

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeClient answers Get with successive states (the last repeats) and
// Content from files.
type fakeClient struct {
	states []Batch
	gets   int
	files  map[string]string
}

func (f *fakeClient) Submit(context.Context, string, io.Reader, map[string]string) (Batch, error) {
	return f.states[0], nil
}

func (f *fakeClient) Get(context.Context, string) (Batch, error) {
	b := f.states[min(f.gets, len(f.states)-1)]
	f.gets++
	return b, nil
}

func (f *fakeClient) Cancel(context.Context, string) (Batch, error) { return f.states[0], nil }

func (f *fakeClient) Content(_ context.Context, id string) (io.ReadCloser, error) {
	s, ok := f.files[id]
	if !ok {
		return nil, errors.New("file " + id + ": not found")
	}
	return io.NopCloser(strings.NewReader(s)), nil
}

func testBatch(status string, total, completed, failed int64) Batch {
	b := Batch{ID: "batch_1", Status: status, OutputFileID: "out", ErrorFileID: "err"}
	b.Counts.Total, b.Counts.Completed, b.Counts.Failed = total, completed, failed
	return b
}

func TestFollowToTheEnd(t *testing.T) {
	c := &fakeClient{states: []Batch{testBatch("in_progress", 2, 1, 0), testBatch("completed", 2, 1, 1)}}
	var w bytes.Buffer
	b, err := Follow(t.Context(), c, testBatch("validating", 0, 0, 0), time.Millisecond, &w)
	if err != nil || b.Status != "completed" {
		t.Fatalf("Follow: %v %+v", err, b)
	}
	want := "batch_1 validating: 0/0 done, 0 failed\nbatch_1 in_progress: 1/2 done, 0 failed\nbatch_1 completed: 2/2 done, 1 failed\n"
	if w.String() != want {
		t.Errorf("progress:\n%s\nwant:\n%s", w.String(), want)
	}
}

func TestFollowInterrupted(t *testing.T) {
	c := &fakeClient{states: []Batch{testBatch("in_progress", 2, 0, 0)}}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := Follow(ctx, c, c.states[0], time.Hour, io.Discard); !errors.Is(err, ErrInterrupted) {
		t.Errorf("err %v, want ErrInterrupted", err)
	}
}

func TestWriteResults(t *testing.T) {
	c := &fakeClient{files: map[string]string{"out": "o\n", "err": "e\n"}}
	for _, tc := range []struct {
		name      string
		b         Batch
		o         Options
		stdout    string
		errSuffix string // the error file beside Out
		wantErr   string
	}{
		{name: "to stdout and stderr", b: testBatch("completed", 2, 1, 1), stdout: "o\n"},
		{name: "to files", b: testBatch("completed", 2, 1, 1), o: Options{Out: "r.jsonl"}, errSuffix: "r.errors.jsonl"},
		{name: "wait without out", b: testBatch("completed", 2, 1, 1), o: Options{Wait: true}},
		{name: "not ended", b: testBatch("in_progress", 4, 1, 0), wantErr: "batch batch_1 is in_progress: 1/4 done; results come when it ends"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			if tc.o.Out != "" {
				tc.o.Out = filepath.Join(dir, tc.o.Out)
			}
			var stdout, stderr bytes.Buffer
			err := WriteResults(t.Context(), c, tc.b, tc.o, &stdout, &stderr)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || stdout.String() != tc.stdout {
				t.Fatalf("err %v, stdout %q, want %q", err, stdout.String(), tc.stdout)
			}
			if tc.errSuffix != "" {
				if data, err := os.ReadFile(filepath.Join(dir, tc.errSuffix)); err != nil || string(data) != "e\n" {
					t.Errorf("error file: %v %q", err, data)
				}
			}
		})
	}
}

func TestPrint(t *testing.T) {
	b := testBatch("failed", 0, 0, 0)
	b.Errors = []string{"line 3: invalid_file: no valid line"}
	var w bytes.Buffer
	if err := Print(&w, b, false); err != nil {
		t.Fatal(err)
	}
	want := "id:       batch_1\nstatus:   failed\nprogress: 0/0 done, 0 failed\ncreated:  1970-01-01T00:00:00Z\ninput:    \noutput:   out\nerrors:   err\nerror:    line 3: invalid_file: no valid line\n"
	if w.String() != want {
		t.Errorf("Print:\n%s\nwant:\n%s", w.String(), want)
	}
	if b.ErrorsText() != ": line 3: invalid_file: no valid line" {
		t.Errorf("ErrorsText %q", b.ErrorsText())
	}
}
