package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/schollz/progressbar/v3"

	"github.com/laas-bridge/laas-bridge/schema"
)

const batchUsage = `laas-bridge batch submits and follows OpenAI batches (JSONL files of
/v1/chat/completions requests) through a running bridge's Batch API.

Usage:
  laas-bridge batch submit <input.jsonl> [--wait] [--out results.jsonl] [--errors errors.jsonl]
  laas-bridge batch status <batch id> [--json]
  laas-bridge batch results <batch id> [--out results.jsonl] [--errors errors.jsonl]
  laas-bridge batch cancel <batch id>

Each input line is OpenAI's batch line:
  {"custom_id": "q1", "method": "POST", "url": "/v1/chat/completions", "body": {...}}
A bad line does not fail the batch: it goes to the error file with its custom_id.

--wait follows the batch to its end with a progress bar (plain lines when the
output is not a terminal), then writes the results. Ctrl-C stops following and
leaves the batch running. The bridge is --url (BRIDGE_URL, default
http://localhost:4000), with --key (BRIDGE_API_KEY, else BRIDGE_MASTER_KEY) as
its bearer key; or, with --nats URL ("--nats -" for NATS_URL), the Batch
API's JetStream buckets directly, for hosts that reach NATS but no gateway.
`

// errInterrupted is returned when Ctrl-C stopped a command that left work
// running on the server; main exits 130 for it.
var errInterrupted = errors.New("interrupted")

// batchInfo is what the CLI needs of an OpenAI batch object.
type batchInfo struct {
	ID           string `json:"id"`
	Status       string `json:"status"`
	InputFileID  string `json:"input_file_id"`
	OutputFileID string `json:"output_file_id,omitempty"`
	ErrorFileID  string `json:"error_file_id,omitempty"`
	CreatedAt    int64  `json:"created_at"`
	Counts       struct {
		Total     int64 `json:"total"`
		Completed int64 `json:"completed"`
		Failed    int64 `json:"failed"`
	} `json:"request_counts"`
	Errors []string `json:"errors,omitempty"`
}

// final reports whether a batch in this status will not change again.
func (b batchInfo) final() bool {
	switch b.Status {
	case "completed", "failed", "cancelled", "expired":
		return true
	}
	return false
}

// batchClient is the Batch API as the CLI uses it.
type batchClient interface {
	// submit uploads the JSONL file and creates a batch on it.
	submit(ctx context.Context, name string, r io.Reader, metadata map[string]string) (batchInfo, error)
	get(ctx context.Context, id string) (batchInfo, error)
	cancel(ctx context.Context, id string) (batchInfo, error)
	// content returns a file's bytes (an output or error file).
	content(ctx context.Context, fileID string) (io.ReadCloser, error)
}

// batchFlags are the flags every batch subcommand takes.
type batchFlags struct {
	url, key     string
	nats         string
	wait, asJSON bool
	out, errs    string
	poll         time.Duration
	metadata     metadataFlag
}

type metadataFlag map[string]string

func (m metadataFlag) String() string { return "" }
func (m metadataFlag) Set(v string) error {
	k, val, ok := strings.Cut(v, "=")
	if !ok || k == "" {
		return fmt.Errorf("metadata %q: want key=value", v)
	}
	m[k] = val
	return nil
}

// runBatch runs `batch submit|status|results|cancel`.
func runBatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, batchUsage)
		return errUsage
	}
	sub, args := args[0], args[1:]
	f := batchFlags{metadata: metadataFlag{}, poll: 2 * time.Second}
	f.url = envOr("BRIDGE_URL", "http://localhost:4000")
	f.key = envOr("BRIDGE_API_KEY", os.Getenv("BRIDGE_MASTER_KEY"))
	fs := flag.NewFlagSet("batch "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, batchUsage, "\nFlags:\n"); fs.PrintDefaults() }
	fs.StringVar(&f.url, "url", f.url, "the bridge's base URL (BRIDGE_URL)")
	secretFlag(fs, &f.key, "key", "bearer key for the bridge (BRIDGE_API_KEY, else BRIDGE_MASTER_KEY)")
	fs.DurationVar(&f.poll, "poll", f.poll, "how often to ask for the batch's progress")
	secretFlag(fs, &f.nats, "nats", "NATS server URLs, comma-separated: use NATS instead of the HTTP API (\"-\": NATS_URL)")
	switch sub {
	case "submit":
		fs.BoolVar(&f.wait, "wait", false, "follow the batch to its end, then write its results")
		fs.StringVar(&f.out, "out", "", "with --wait: write the output file (JSONL) here")
		fs.StringVar(&f.errs, "errors", "", "with --wait: write the error file here (default: <out>.errors.jsonl)")
		fs.Var(f.metadata, "metadata", "key=value kept on the batch (repeatable)")
	case "results":
		fs.StringVar(&f.out, "out", "", "write the output file here (default: standard output)")
		fs.StringVar(&f.errs, "errors", "", "write the error file here (default: <out>.errors.jsonl, or standard error)")
	case "status":
		fs.BoolVar(&f.asJSON, "json", false, "print the batch object as JSON")
	case "cancel":
	case "-h", "--help", "help":
		fmt.Fprint(stdout, batchUsage)
		return nil
	default:
		fmt.Fprintf(stderr, "unknown batch command %q\n\n%s", sub, batchUsage)
		return errUsage
	}
	// The positional argument comes first; flags may follow it.
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if err := fs.Parse(args); err != nil {
			return errUsage
		}
		fmt.Fprintf(stderr, "batch %s needs %s\n", sub, map[bool]string{true: "an input file", false: "a batch id"}[sub == "submit"])
		return errUsage
	}
	arg := args[0]
	if err := parseFlags(fs, args[1:]); err != nil {
		return err
	}
	if f.out == "" && f.errs != "" && sub == "submit" {
		fmt.Fprintln(stderr, "--errors needs --out")
		return errUsage
	}
	if (f.out != "") && sub == "submit" && !f.wait {
		fmt.Fprintln(stderr, "--out needs --wait (or use 'batch results <id> --out FILE' later)")
		return errUsage
	}
	if f.poll <= 0 {
		fmt.Fprintln(stderr, "--poll must be positive")
		return errUsage
	}
	var c batchClient
	if f.nats != "" {
		url := f.nats
		if url == "-" {
			url = os.Getenv("NATS_URL")
		}
		maxFile := int64(schema.MaxBatchFileBytes)
		if env, err := readEnv(); err == nil && env.MaxFile > 0 {
			maxFile = env.MaxFile
		}
		nc, err := newNATSBatchClient(ctx, url, maxFile)
		if err != nil {
			return err
		}
		defer nc.close()
		c = nc
	} else {
		hc, err := newHTTPBatchClient(f.url, f.key)
		if err != nil {
			return err
		}
		c = hc
	}
	switch sub {
	case "submit":
		return batchSubmit(ctx, c, arg, f, stdout, stderr)
	case "status":
		b, err := c.get(ctx, arg)
		if err != nil {
			return err
		}
		return printBatch(stdout, b, f.asJSON)
	case "results":
		b, err := c.get(ctx, arg)
		if err != nil {
			return err
		}
		return writeResults(ctx, c, b, f, stdout, stderr)
	default: // cancel
		b, err := c.cancel(ctx, arg)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s\n", b.ID, b.Status)
		return nil
	}
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

func batchSubmit(ctx context.Context, c batchClient, path string, f batchFlags, stdout, stderr io.Writer) error {
	in, err := os.Open(path)
	if err != nil {
		return err
	}
	defer in.Close()
	b, err := c.submit(ctx, filepath.Base(path), in, f.metadata)
	if err != nil {
		return err
	}
	fmt.Fprintln(stdout, b.ID)
	if !f.wait {
		fmt.Fprintf(stderr, "batch %s %s; follow it with: laas-bridge batch status %s\n", b.ID, b.Status, b.ID)
		return nil
	}
	b, err = follow(ctx, c, b, f.poll, stderr)
	if err != nil {
		if errors.Is(err, errInterrupted) {
			fmt.Fprintf(stderr, "\nstopped following; batch %s keeps running.\nfollow it with: laas-bridge batch status %s\nresults with:   laas-bridge batch results %s --out results.jsonl\n", b.ID, b.ID, b.ID)
		}
		return err
	}
	if err := writeResults(ctx, c, b, f, stdout, stderr); err != nil {
		return err
	}
	if b.Status != "completed" {
		return fmt.Errorf("batch %s ended %s%s", b.ID, b.Status, batchErrors(b))
	}
	return nil
}

func batchErrors(b batchInfo) string {
	if len(b.Errors) == 0 {
		return ""
	}
	return ": " + strings.Join(b.Errors, "; ")
}

// follow polls the batch until it is final, drawing progress on w. A
// cancelled ctx (Ctrl-C) returns errInterrupted and leaves the batch alone.
func follow(ctx context.Context, c batchClient, b batchInfo, poll time.Duration, w io.Writer) (batchInfo, error) {
	p := newProgress(w, b)
	defer p.close()
	t := time.NewTicker(poll)
	defer t.Stop()
	for {
		p.update(b)
		if b.final() {
			return b, nil
		}
		select {
		case <-ctx.Done():
			return b, errInterrupted
		case <-t.C:
		}
		next, err := c.get(ctx, b.ID)
		if err != nil {
			if ctx.Err() != nil {
				return b, errInterrupted
			}
			return b, err
		}
		b = next
	}
}

// progress shows a batch's progress: a bar on a terminal, else a plain
// line whenever the counts or the status change.
type progress struct {
	w     io.Writer
	bar   *progressbar.ProgressBar
	start time.Time
	last  string
	seen0 int64 // done when following started, for the rate
}

func newProgress(w io.Writer, b batchInfo) *progress {
	p := &progress{w: w, start: time.Now(), seen0: b.Counts.Completed + b.Counts.Failed}
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

func (p *progress) update(b batchInfo) {
	done := b.Counts.Completed + b.Counts.Failed
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
		if left := b.Counts.Total - done; left > 0 && !b.final() {
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

// writeResults writes a final batch's output file to f.out (or stdout) and
// its error file to f.errs (or <out>.errors.jsonl, or stderr).
func writeResults(ctx context.Context, c batchClient, b batchInfo, f batchFlags, stdout, stderr io.Writer) error {
	if !b.final() && b.Status != "cancelling" {
		return fmt.Errorf("batch %s is %s: %d/%d done; results come when it ends", b.ID, b.Status, b.Counts.Completed+b.Counts.Failed, b.Counts.Total)
	}
	if f.wait && f.out == "" {
		return nil // submit --wait without --out: the ids and counts are enough
	}
	if err := copyFile(ctx, c, b.OutputFileID, f.out, stdout); err != nil {
		return fmt.Errorf("output file: %w", err)
	}
	errPath := f.errs
	if errPath == "" && f.out != "" && b.ErrorFileID != "" {
		errPath = strings.TrimSuffix(f.out, ".jsonl") + ".errors.jsonl"
	}
	if err := copyFile(ctx, c, b.ErrorFileID, errPath, stderr); err != nil {
		return fmt.Errorf("error file: %w", err)
	}
	if f.out != "" {
		fmt.Fprintf(stderr, "%s: %d completed, %d failed; output in %s", b.ID, b.Counts.Completed, b.Counts.Failed, f.out)
		if b.ErrorFileID != "" {
			fmt.Fprintf(stderr, ", errors in %s", errPath)
		}
		fmt.Fprintln(stderr)
	}
	return nil
}

// copyFile writes file id to path, or to w when path is empty. No id, no
// file: an empty path is left alone, a named one is not created.
func copyFile(ctx context.Context, c batchClient, id, path string, w io.Writer) error {
	if id == "" {
		return nil
	}
	r, err := c.content(ctx, id)
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

func printBatch(w io.Writer, b batchInfo, asJSON bool) error {
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(b)
	}
	fmt.Fprintf(w, "id:       %s\nstatus:   %s\nprogress: %d/%d done, %d failed\n", b.ID, b.Status, b.Counts.Completed+b.Counts.Failed, b.Counts.Total, b.Counts.Failed)
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
