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

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

const dlqUsage = `laas-bridge dlq inspects and replays dead letters: jobs that ran out of attempts.

Usage:
  laas-bridge dlq list [--json] [--nats-url URL]
  laas-bridge dlq replay <id> [--timeout 10m] [--nats-url URL]
  laas-bridge dlq replay --all [--timeout 10m] [--nats-url URL]

list reads the dead letters without consuming them, oldest first. replay
publishes a dead letter's request again, on the batch lane (` + schema.SubjectBatch + `,
nobody waits for the answer) with a fresh deadline, and deletes the dead
letter once the queue has stored the request. Both need NATS_URL or
--nats-url (for 'serve', its embedded NATS: nats://127.0.0.1:4222).
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
	nc, err := queue.Connect(env.NATSURL, "laas-bridge dlq", log)
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	dead, err := js.Stream(ctx, schema.StreamDead)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("no dead-letter stream %s on %s: a worker (or `laas-bridge serve`) creates it when it starts", schema.StreamDead, nc.ConnectedUrlRedacted())
	}
	if err != nil {
		return fmt.Errorf("dead-letter stream %s: %w", schema.StreamDead, err)
	}
	d := dlq{js: js, nc: nc, dead: dead, stdout: stdout, stderr: stderr}
	switch {
	case sub == "list":
		return d.list(ctx, asJSON)
	case all:
		return d.replayAll(ctx, timeout)
	default:
		return d.replayOne(ctx, id, timeout)
	}
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

// dlq works on the dead-letter stream.
type dlq struct {
	js             jetstream.JetStream
	nc             *nats.Conn
	dead           jetstream.Stream
	stdout, stderr io.Writer
}

// deadEntry is one dead letter and its sequence in the dead-letter stream.
type deadEntry struct {
	seq uint64
	rec schema.DeadLetterRecord
}

// read returns every dead letter, oldest first, without consuming any: an
// ordered consumer reads the stream up to its last message at the start.
func (d *dlq) read(ctx context.Context) ([]deadEntry, error) {
	info, err := d.dead.Info(ctx)
	if err != nil {
		return nil, fmt.Errorf("dead-letter stream %s: %w", schema.StreamDead, err)
	}
	if info.State.Msgs == 0 {
		return nil, nil
	}
	last := info.State.LastSeq
	cons, err := d.js.OrderedConsumer(ctx, schema.StreamDead, jetstream.OrderedConsumerConfig{})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", schema.StreamDead, err)
	}
	var out []deadEntry
	for remaining := info.State.Msgs; ; {
		// Asking for no more than the stream holds ends each fetch as soon
		// as they arrive, not at its expiry.
		batch, err := cons.Fetch(int(min(max(remaining, 1), 256)), jetstream.FetchMaxWait(2*time.Second))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", schema.StreamDead, err)
		}
		n, done := 0, false
		for msg := range batch.Messages() {
			n++
			remaining = max(remaining-1, 0)
			md, err := msg.Metadata()
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", schema.StreamDead, err)
			}
			if md.Sequence.Stream > last {
				done = true
				break
			}
			var rec schema.DeadLetterRecord
			if err := json.Unmarshal(msg.Data(), &rec); err != nil || rec.ID == "" {
				fmt.Fprintf(d.stderr, "skipping message %d on %s: not a dead-letter record\n", md.Sequence.Stream, msg.Subject())
			} else {
				out = append(out, deadEntry{seq: md.Sequence.Stream, rec: rec})
			}
			if md.Sequence.Stream == last || md.NumPending == 0 {
				done = true
			}
		}
		if err := batch.Error(); err != nil && !errors.Is(err, nats.ErrTimeout) {
			return nil, fmt.Errorf("read %s: %w", schema.StreamDead, err)
		}
		if done || n == 0 || ctx.Err() != nil {
			return out, ctx.Err()
		}
	}
}

// list prints the dead letters as a table, or as JSON.
func (d *dlq) list(ctx context.Context, asJSON bool) error {
	entries, err := d.read(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		recs := make([]schema.DeadLetterRecord, 0, len(entries))
		for _, e := range entries {
			recs = append(recs, e.rec)
		}
		return writeJSONLines(d.stdout, recs)
	}
	if len(entries) == 0 {
		fmt.Fprintf(d.stdout, "no dead letters in %s\n", schema.StreamDead)
		return nil
	}
	tw := tabwriter.NewWriter(d.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tMODEL\tSTATUS\tATTEMPTS\tFAILED_AT\tREASON")
	for _, e := range entries {
		r := e.rec
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

// replayOne replays the dead letter of request id.
func (d *dlq) replayOne(ctx context.Context, id string, timeout time.Duration) error {
	m, err := d.dead.GetLastMsgForSubject(ctx, schema.DeadLetterSubject(id))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("no dead letter for request id %q in %s (see `laas-bridge dlq list`)", id, schema.StreamDead)
	}
	if err != nil {
		return fmt.Errorf("read the dead letter of %s: %w", id, err)
	}
	var rec schema.DeadLetterRecord
	if err := json.Unmarshal(m.Data, &rec); err != nil || rec.ID != id {
		return fmt.Errorf("no dead letter for request id %q in %s (see `laas-bridge dlq list`)", id, schema.StreamDead)
	}
	return d.replay(ctx, deadEntry{seq: m.Sequence, rec: rec}, timeout)
}

// replayAll replays every dead letter kept when it starts, oldest first, and
// stops at the first that fails (a full queue fails the rest too).
func (d *dlq) replayAll(ctx context.Context, timeout time.Duration) error {
	entries, err := d.read(ctx)
	if err != nil {
		return err
	}
	if len(entries) == 0 {
		fmt.Fprintf(d.stdout, "no dead letters in %s\n", schema.StreamDead)
		return nil
	}
	for i, e := range entries {
		if err := d.replay(ctx, e, timeout); err != nil {
			return fmt.Errorf("%w (%d of %d dead letters replayed)", err, i, len(entries))
		}
	}
	fmt.Fprintf(d.stdout, "replayed %d dead letters\n", len(entries))
	return nil
}

// replay publishes e's request to the batch lane with a fresh deadline and
// no reply subject, and deletes the dead letter once the request stream has
// stored it. Its Nats-Msg-Id, <id>.replay.<dead-letter sequence>, makes a
// second replay of the same dead letter (after a crash before the delete) a
// duplicate the request stream drops.
func (d *dlq) replay(ctx context.Context, e deadEntry, timeout time.Duration) error {
	rec := e.rec
	var bodies jetstream.ObjectStore
	store := func() (jetstream.ObjectStore, error) {
		if bodies != nil {
			return bodies, nil
		}
		var err error
		bodies, err = d.js.ObjectStore(ctx, schema.BucketBodies)
		if err != nil {
			return nil, fmt.Errorf("large-body store %s: %w", schema.BucketBodies, err)
		}
		return bodies, nil
	}
	body := []byte(rec.Request)
	if rec.RequestRef != "" {
		s, err := store()
		if err != nil {
			return err
		}
		body, err = s.GetBytes(ctx, rec.RequestRef)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return fmt.Errorf("replay %s: its request body %s is gone from %s (that bucket's TTL ended it)", rec.ID, rec.RequestRef, schema.BucketBodies)
		}
		if err != nil {
			return fmt.Errorf("replay %s: read its request body %s: %w", rec.ID, rec.RequestRef, err)
		}
	}
	if len(body) == 0 {
		return fmt.Errorf("replay %s: the dead letter holds no request to replay", rec.ID)
	}

	msgID := fmt.Sprintf("%s.replay.%d", rec.ID, e.seq)
	now := time.Now().UTC()
	env := schema.Envelope{ID: rec.ID, Model: rec.Model, EnqueuedAt: now, Deadline: now.Add(timeout)}
	if len(body) > int(d.nc.MaxPayload()/2) {
		s, err := store()
		if err != nil {
			return err
		}
		if _, err := s.PutBytes(ctx, msgID, body); err != nil {
			return fmt.Errorf("replay %s: store its large request body: %w", rec.ID, err)
		}
		env.RequestRef = msgID
	} else {
		env.Request = body
	}
	data, err := json.Marshal(env)
	if err != nil {
		return fmt.Errorf("replay %s: %w", rec.ID, err)
	}
	msg := nats.NewMsg(schema.SubjectBatch)
	msg.Data = data
	msg.Header.Set(schema.HeaderMsgID, msgID)
	ack, err := d.js.PublishMsg(ctx, msg)
	if err != nil {
		if env.RequestRef != "" {
			_ = bodies.Delete(context.WithoutCancel(ctx), env.RequestRef)
		}
		return fmt.Errorf("replay %s: publish to %s: %w", rec.ID, schema.SubjectBatch, err)
	}
	if err := d.dead.DeleteMsg(ctx, e.seq); err != nil && !errors.Is(err, jetstream.ErrMsgNotFound) {
		return fmt.Errorf("replay %s: published as %s, but the dead letter could not be deleted: %w", rec.ID, msgID, err)
	}
	if rec.RequestRef != "" {
		if err := bodies.Delete(ctx, rec.RequestRef); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
			fmt.Fprintf(d.stderr, "could not delete %s from %s (its TTL will): %v\n", rec.RequestRef, schema.BucketBodies, err)
		}
	}
	verb := "replayed"
	if ack.Duplicate {
		verb = "already replayed"
	}
	fmt.Fprintf(d.stdout, "%s %s (model %s, %d attempts, failed %s) to %s as %s, timeout %s\n",
		verb, rec.ID, rec.Model, rec.Attempts, rec.FailedAt.UTC().Format(time.RFC3339), schema.SubjectBatch, msgID, timeout)
	return nil
}
