package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/laas-bridge/laas-bridge/batch/batchcli"
	"github.com/laas-bridge/laas-bridge/queue"
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
API's JetStream buckets directly, for hosts that reach NATS but no gateway,
signing in as NATS_CREDS or NATS_NKEY_SEED says (with NATS_CA, NATS_CERT and
NATS_KEY for TLS).
`

// errInterrupted is returned when Ctrl-C stopped a command that left work
// running on the server; main exits 130 for it.
var errInterrupted = batchcli.ErrInterrupted

// batchFlags are the flags every batch subcommand takes.
type batchFlags struct {
	url, key     string
	nats         string
	wait, asJSON bool
	out, errs    string
	poll         time.Duration
	metadata     metadataFlag
}

func (f batchFlags) options() batchcli.Options {
	return batchcli.Options{Wait: f.wait, Out: f.out, Errors: f.errs, Poll: f.poll, Metadata: f.metadata}
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

// runBatch runs `batch submit|status|results|cancel`: it parses the flags,
// chooses the client (HTTP, or NATS with --nats) and calls batchcli.
func runBatch(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, batchUsage)
		return errUsage
	}
	sub := args[0]
	if sub == "-h" || sub == "--help" || sub == "help" {
		fmt.Fprint(stdout, batchUsage)
		return nil
	}
	arg, f, err := parseBatchArgs(sub, args[1:], stderr)
	if err != nil {
		return err
	}
	c, closeClient, err := newBatchClient(ctx, f)
	if err != nil {
		return err
	}
	defer closeClient()
	switch sub {
	case "submit":
		return batchcli.Submit(ctx, c, arg, f.options(), stdout, stderr)
	case "status":
		b, err := c.Get(ctx, arg)
		if err != nil {
			return err
		}
		return batchcli.Print(stdout, b, f.asJSON)
	case "results":
		b, err := c.Get(ctx, arg)
		if err != nil {
			return err
		}
		return batchcli.WriteResults(ctx, c, b, f.options(), stdout, stderr)
	default: // cancel
		b, err := c.Cancel(ctx, arg)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s %s\n", b.ID, b.Status)
		return nil
	}
}

// parseBatchArgs parses a batch subcommand's positional argument (an input
// file or a batch id, first) and flags (after it).
func parseBatchArgs(sub string, args []string, stderr io.Writer) (string, batchFlags, error) {
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
	default:
		fmt.Fprintf(stderr, "unknown batch command %q\n\n%s", sub, batchUsage)
		return "", f, errUsage
	}
	// The positional argument comes first; flags may follow it.
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		if err := fs.Parse(args); err != nil {
			return "", f, errUsage
		}
		fmt.Fprintf(stderr, "batch %s needs %s\n", sub, map[bool]string{true: "an input file", false: "a batch id"}[sub == "submit"])
		return "", f, errUsage
	}
	if err := parseFlags(fs, args[1:]); err != nil {
		return "", f, err
	}
	if f.out == "" && f.errs != "" && sub == "submit" {
		fmt.Fprintln(stderr, "--errors needs --out")
		return "", f, errUsage
	}
	if (f.out != "") && sub == "submit" && !f.wait {
		fmt.Fprintln(stderr, "--out needs --wait (or use 'batch results <id> --out FILE' later)")
		return "", f, errUsage
	}
	if f.poll <= 0 {
		fmt.Fprintln(stderr, "--poll must be positive")
		return "", f, errUsage
	}
	return args[0], f, nil
}

// newBatchClient is the NATS client with --nats, else the HTTP one; call
// the returned func when done.
func newBatchClient(ctx context.Context, f batchFlags) (batchcli.Client, func(), error) {
	if f.nats == "" {
		hc, err := batchcli.NewHTTPClient(f.url, f.key)
		if err != nil {
			return nil, nil, fmt.Errorf("--url %w", err)
		}
		return hc, func() {}, nil
	}
	url := f.nats
	if url == "-" {
		url = os.Getenv("NATS_URL")
	}
	maxFile := int64(schema.MaxBatchFileBytes)
	if env, err := readEnv(); err == nil && env.MaxFile > 0 {
		maxFile = env.MaxFile
	}
	opts, err := queue.IdentityFromEnv(os.Getenv).Options()
	if err != nil {
		return nil, nil, err
	}
	nc, err := batchcli.NewNATSClient(ctx, url, maxFile, opts...)
	if err != nil {
		return nil, nil, err
	}
	return nc, nc.Close, nil
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}
