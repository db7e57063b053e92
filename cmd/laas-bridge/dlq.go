package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
	"github.com/laas-bridge/laas-bridge/worker/dlq"
)

const dlqUsage = `laas-bridge dlq inspects and replays dead letters: jobs that ran out of attempts.

Usage:
  laas-bridge dlq list [--json] [--nats-url URL]
  laas-bridge dlq replay <id> [--timeout 10m] [--nats-url URL]
  laas-bridge dlq replay --all [--timeout 10m] [--nats-url URL]

list reads the dead letters without consuming them, oldest first. replay
checks a dead letter's request again, as every request is checked (so it
reads config.yaml, BRIDGE_CONFIG, for the models), queues it as a job of its
own, <id>-replay-<n>, on the batch lane with a fresh deadline, and deletes
the dead letter once the queue has stored the job; its result is then at
GET /v1/queue/jobs/<job id> and on laas.results.<job id>. Both need NATS_URL
or --nats-url, and the identity that NATS expects (NATS_CREDS or
NATS_NKEY_SEED, NATS_CA, NATS_CERT and NATS_KEY). For 'serve', start it with
BRIDGE_NATS_LISTEN and use the NATS_NKEY_SEED and NATS_URL it logs.
`

// DefaultReplayTimeout is the deadline of a replayed request.
const DefaultReplayTimeout = 10 * time.Minute

// reasonWidth bounds the reason column of `dlq list`.
const reasonWidth = 80

// runDLQ runs `dlq list` and `dlq replay`.
func runDLQ(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, dlqUsage)
		return errUsage
	}
	sub, args := args[0], args[1:]
	env, err := readEnv()
	if err != nil {
		return err
	}
	fs := flag.NewFlagSet("dlq "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, dlqUsage, "\nFlags:\n"); fs.PrintDefaults() }
	secretFlag(fs, &env.NATSURL, "nats-url", "NATS server URLs, comma-separated (NATS_URL)")
	var asJSON, all bool
	timeout := DefaultReplayTimeout
	switch sub {
	case "list":
		fs.BoolVar(&asJSON, "json", false, "print the dead-letter records as a JSON array")
	case "replay":
		fs.BoolVar(&all, "all", false, "replay every dead letter")
		fs.DurationVar(&timeout, "timeout", timeout, "deadline of each replayed request, from now")
	case "help", "-h", "--help":
		fmt.Fprint(stdout, dlqUsage)
		return nil
	default:
		fmt.Fprintf(stderr, "unknown dlq command %q\n\n%s", sub, dlqUsage)
		return errUsage
	}
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	var id string
	switch {
	case sub == "list" && len(pos) > 0:
		fmt.Fprintf(stderr, "unexpected arguments: %s\n", strings.Join(pos, " "))
		return errUsage
	case sub == "replay" && all == (len(pos) > 0), sub == "replay" && len(pos) > 1:
		fmt.Fprint(stderr, "dlq replay takes one request id or --all\n\n", dlqUsage)
		return errUsage
	case sub == "replay" && !all:
		id = pos[0]
	}
	if sub == "replay" && (timeout <= 0 || timeout > schema.MaxRequestTimeout) {
		return fmt.Errorf("--timeout must be more than 0 and at most %s, got %s", schema.MaxRequestTimeout, timeout)
	}
	if strings.TrimSpace(env.NATSURL) == "" {
		return errors.New("NATS_URL is not set: `laas-bridge dlq` reads the dead letters from the bridge's NATS server (set NATS_URL or --nats-url)")
	}
	log, err := newLogger(stderr, env.LogLevel, env.LogFormat)
	if err != nil {
		return err
	}
	opts, err := env.natsIdentity().Options()
	if err != nil {
		return err
	}
	nc, err := queue.Connect(env.NATSURL, "laas-bridge dlq", log, opts...)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	store, err := dlq.Open(ctx, js)
	if errors.Is(err, dlq.ErrNoStream) {
		return fmt.Errorf("no dead-letter stream %s on %s: a worker (or `laas-bridge serve`) creates it when it starts", schema.StreamDead, nc.ConnectedUrlRedacted())
	}
	if err != nil {
		return err
	}
	store.Skipped = func(seq uint64, subject string) {
		fmt.Fprintf(stderr, "skipping message %d on %s: not a dead-letter record\n", seq, subject)
	}
	if sub == "list" {
		return listDead(ctx, store, asJSON, stdout)
	}
	cfgFile, err := loadConfig(env.Config, log)
	if err != nil {
		return err
	}
	// A replay is still its key's: judged by the key as it is now, under
	// its limits, as at every other door.
	keyStore, keyLimits, err := openKeys(ctx, js, log)
	if err != nil {
		return err
	}
	defer keyStore.Close()
	core, err := admission.Open(ctx, admission.Config{AllowPresetOverride: cfgFile.AllowPresetOverride, MaxBodyBytes: env.MaxBody,
		Keys: keyStore, Limits: keyLimits}, js, cfgFile.Catalog, log)
	if err != nil {
		return err
	}
	r := replayer{store: store, core: core, timeout: timeout, stdout: stdout, stderr: stderr}
	if all {
		return r.all(ctx)
	}
	e, err := store.Get(ctx, id)
	if errors.Is(err, dlq.ErrNotFound) {
		return fmt.Errorf("%w (see `laas-bridge dlq list`)", err)
	}
	if err != nil {
		return err
	}
	return r.one(ctx, e)
}

// parseInterspersed parses flags that may come before or after the
// positional arguments, which it returns.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, errUsage // the flag package has printed the problem and the usage
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// listDead prints the dead letters as a table, or as JSON.
func listDead(ctx context.Context, store *dlq.Store, asJSON bool, stdout io.Writer) error {
	entries, err := store.List(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		recs := make([]schema.DeadLetterRecord, 0, len(entries))
		for _, e := range entries {
			recs = append(recs, e.Record)
		}
		return writeJSONLines(stdout, recs)
	}
	if len(entries) == 0 {
		fmt.Fprintf(stdout, "no dead letters in %s\n", schema.StreamDead)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tMODEL\tSTATUS\tATTEMPTS\tFAILED_AT\tREASON")
	for _, e := range entries {
		r := e.Record
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", r.ID, r.Model, r.Reason.Status, r.Attempts,
			r.FailedAt.UTC().Format(time.RFC3339), oneLine(r.Reason.Error.Message, reasonWidth))
	}
	return tw.Flush()
}

// writeJSONLines writes recs as a JSON array with one record per line. A
// record's request is written as it was sent, not re-indented.
func writeJSONLines(w io.Writer, recs []schema.DeadLetterRecord) error {
	var b strings.Builder
	b.WriteString("[")
	for i, r := range recs {
		line, err := json.Marshal(r)
		if err != nil {
			return err
		}
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n")
		b.Write(line)
	}
	if len(recs) > 0 {
		b.WriteString("\n")
	}
	b.WriteString("]\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// oneLine flattens s to one line of at most width runes.
func oneLine(s string, width int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > width {
		return string(r[:width-1]) + "…"
	}
	return s
}

// replayer replays dead letters and says what it did.
type replayer struct {
	store          *dlq.Store
	core           *admission.Core
	timeout        time.Duration
	stdout, stderr io.Writer
}

// one replays one dead letter.
func (r replayer) one(ctx context.Context, e dlq.Entry) error {
	rep, err := r.store.Replay(ctx, r.core, e, r.timeout)
	if err != nil {
		return err
	}
	if rep.BodyLeft != nil {
		fmt.Fprintf(r.stderr, "could not delete %s from %s (its TTL will): %v\n", e.Record.RequestRef, schema.BucketBodies, rep.BodyLeft)
	}
	verb := "replayed"
	if rep.Duplicate {
		verb = "already replayed"
	}
	rec := e.Record
	fmt.Fprintf(r.stdout, "%s %s (model %s, %d attempts, failed %s) to %s as job %s, timeout %s\n",
		verb, rec.ID, rec.Model, rec.Attempts, rec.FailedAt.UTC().Format(time.RFC3339), rep.Subject, rep.JobID, r.timeout)
	return nil
}

// all replays every dead letter kept when it starts, oldest first, and
// stops at the first that fails (a full queue fails the rest too).
func (r replayer) all(ctx context.Context) error {
	entries, err := r.store.List(ctx)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		fmt.Fprintf(r.stdout, "no dead letters in %s\n", schema.StreamDead)
		return nil
	}
	for i, e := range entries {
		if err := r.one(ctx, e); err != nil {
			return fmt.Errorf("%w (%d of %d dead letters replayed)", err, i, len(entries))
		}
	}
	fmt.Fprintf(r.stdout, "replayed %d dead letters\n", len(entries))
	return nil
}
