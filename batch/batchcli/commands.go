package batchcli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// ErrInterrupted is returned when ctx ended (Ctrl-C) while following a
// batch: the batch keeps running on the server.
var ErrInterrupted = errors.New("interrupted")

// Options are the settings of Submit and WriteResults.
type Options struct {
	// Wait makes Submit follow the batch to its end, then write its
	// results (only when Out is set).
	Wait bool
	// Out is where the output file goes ("": stdout, or nowhere after
	// Wait); Errors where the error file goes ("": <Out>.errors.jsonl, or
	// stderr without Out).
	Out, Errors string
	// Poll is how often Wait asks for the batch's progress.
	Poll time.Duration
	// Metadata is kept on a submitted batch.
	Metadata map[string]string
}

// Submit uploads the JSONL file at path and creates a batch on it; it
// prints the batch id on stdout, and progress and hints on stderr. With
// o.Wait it follows the batch and returns an error unless it completed.
func Submit(ctx context.Context, c Client, path string, o Options, stdout, stderr io.Writer) error {
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	b, err := c.Submit(ctx, filepath.Base(path), in, o.Metadata)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, b.ID)
	if !o.Wait {
		fmt.Fprintf(stderr, "batch %s %s; follow it with: laas-bridge batch status %s\n", b.ID, b.Status, b.ID)
		return nil
	}
	b, err = Follow(ctx, c, b, o.Poll, stderr)
	if err != nil {
		if errors.Is(err, ErrInterrupted) {
			fmt.Fprintf(stderr, "\nstopped following; batch %s keeps running.\nfollow it with: laas-bridge batch status %s\nresults with:   laas-bridge batch results %s --out results.jsonl\n", b.ID, b.ID, b.ID)
		}
		return err
	}
	if err := WriteResults(ctx, c, b, o, stdout, stderr); err != nil {
		return err
	}
	if b.Status != "completed" {
		return fmt.Errorf("batch %s ended %s%s", b.ID, b.Status, b.ErrorsText())
	}
	return nil
}

// Follow polls the batch every poll until it is final, drawing progress on
// w. A cancelled ctx (Ctrl-C) returns ErrInterrupted and leaves the batch
// alone.
func Follow(ctx context.Context, c Client, b Batch, poll time.Duration, w io.Writer) (Batch, error) {
	p := newProgress(w, b)
	defer p.close()
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		p.update(b)
		if b.Final() {
			return b, nil
		}
		select {
		case <-ctx.Done():
			return b, ErrInterrupted
		case <-t.C:
		}
		next, err := c.Get(ctx, b.ID)
		if err != nil {
			if ctx.Err() != nil {
				return b, ErrInterrupted
			}
			return b, err
		}
		b = next
	}
}

// WriteResults writes a final batch's output file to o.Out (or stdout) and
// its error file to o.Errors (or <Out>.errors.jsonl, or stderr).
func WriteResults(ctx context.Context, c Client, b Batch, o Options, stdout, stderr io.Writer) error {
	if !b.Final() && b.Status != "cancelling" {
		return fmt.Errorf("batch %s is %s: %d/%d done; results come when it ends", b.ID, b.Status, b.Done(), b.Counts.Total)
	}
	if o.Wait && o.Out == "" {
		return nil // submit --wait without --out: the ids and counts are enough
	}
	if err := copyFile(ctx, c, b.OutputFileID, o.Out, stdout); err != nil {
		return fmt.Errorf("output file: %w", err)
	}
	errPath := o.Errors
	if errPath == "" && o.Out != "" && b.ErrorFileID != "" {
		errPath = strings.TrimSuffix(o.Out, ".jsonl") + ".errors.jsonl"
	}
	if err := copyFile(ctx, c, b.ErrorFileID, errPath, stderr); err != nil {
		return fmt.Errorf("error file: %w", err)
	}
	if o.Out != "" {
		fmt.Fprintf(stderr, "%s: %d completed, %d failed; output in %s", b.ID, b.Counts.Completed, b.Counts.Failed, o.Out)
		if b.ErrorFileID != "" {
			fmt.Fprintf(stderr, ", errors in %s", errPath)
		}
		fmt.Fprintln(stderr)
	}
	return nil
}

// copyFile writes file id to path, or to w when path is empty. No id, no
// file: an empty path is left alone, a named one is not created.
func copyFile(ctx context.Context, c Client, id, path string, w io.Writer) error {
	if id == "" {
		return nil
	}
	r, err := c.Content(ctx, id)
	if err != nil {
		return err
	}
	defer r.Close()
	if path == "" {
		_, err = io.Copy(w, r)
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".laas-batch-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, r); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// Print writes the batch for a reader, or as indented JSON.
func Print(w io.Writer, b Batch, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(b)
	}
	fmt.Fprintf(w, "id:       %s\nstatus:   %s\nprogress: %d/%d done, %d failed\n", b.ID, b.Status, b.Done(), b.Counts.Total, b.Counts.Failed)
	fmt.Fprintf(w, "created:  %s\ninput:    %s\n", time.Unix(b.CreatedAt, 0).UTC().Format(time.RFC3339), b.InputFileID)
	if b.OutputFileID != "" {
		fmt.Fprintf(w, "output:   %s\n", b.OutputFileID)
	}
	if b.ErrorFileID != "" {
		fmt.Fprintf(w, "errors:   %s\n", b.ErrorFileID)
	}
	for _, e := range b.Errors {
		fmt.Fprintf(w, "error:    %s\n", e)
	}
	return nil
}
