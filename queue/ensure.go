package queue

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Ensure's building blocks: every stream, key-value bucket and object store
// (both are streams underneath) goes through ensureStream, every consumer
// through ensureConsumer. Both create what is missing and, for what exists,
// change only the settings named in the spec: the settings the bridge owns
// (subjects, retention, ...) and those this process was explicitly given.
// A setting left unset keeps what the server holds, so a process started
// without BRIDGE_LAAS_MAX_CONCURRENCY does not undo one started with it.

// EnsureOption changes how Ensure works.
type EnsureOption func(*ensureOptions)

type ensureOptions struct{ log *slog.Logger }

// WithLogger sets where Ensure reports settings it changed and settings it
// could not change (default slog.Default()).
func WithLogger(log *slog.Logger) EnsureOption {
	return func(o *ensureOptions) {
		if log != nil {
			o.log = log
		}
	}
}

// Setting names, as in JetStream's JSON configuration; warnings and errors
// name them.
const (
	setDescription       = "description"
	setSubjects          = "subjects"
	setRetention         = "retention"
	setDiscard           = "discard"
	setStorage           = "storage"
	setMaxMsgs           = "max_msgs"
	setMaxBytes          = "max_bytes"
	setMaxAge            = "max_age"
	setMinMaxAge         = "max_age_at_least"
	setMaxMsgsPerSubject = "max_msgs_per_subject"
	setDuplicates        = "duplicate_window"
	setReplicas          = "num_replicas"
	setFilterSubject     = "filter_subject"
	setAckPolicy         = "ack_policy"
	setAckWait           = "ack_wait"
	setMaxDeliver        = "max_deliver"
	setMaxAckPending     = "max_ack_pending"
)

// change says how a setting may change on a stream or consumer that exists.
type change int

const (
	inPlace  change = iota // JetStream updates it in place
	advisory               // JetStream cannot change it; the bridge works with either value: a warning
	required               // JetStream cannot change it and the bridge needs the value: an error
)

// streamSetting is one stream setting Ensure can compare and apply.
type streamSetting struct {
	get    func(*jetstream.StreamConfig) any
	put    func(dst, src *jetstream.StreamConfig)
	change change
	// loses reports whether applying want to a stream in state st would
	// delete messages (nil: never).
	loses func(want *jetstream.StreamConfig, st jetstream.StreamState) bool
	// enough reports whether the server's value serves as well as want's
	// (nil: only an equal one does).
	enough func(have, want *jetstream.StreamConfig) bool
}

var streamSettings = map[string]streamSetting{
	setDescription: {get: func(c *jetstream.StreamConfig) any { return c.Description }, put: func(d, s *jetstream.StreamConfig) { d.Description = s.Description }},
	setSubjects:    {get: func(c *jetstream.StreamConfig) any { return c.Subjects }, put: func(d, s *jetstream.StreamConfig) { d.Subjects = s.Subjects }},
	setRetention:   {get: func(c *jetstream.StreamConfig) any { return c.Retention }, put: func(d, s *jetstream.StreamConfig) { d.Retention = s.Retention }, change: required},
	setDiscard:     {get: func(c *jetstream.StreamConfig) any { return c.Discard }, put: func(d, s *jetstream.StreamConfig) { d.Discard = s.Discard }},
	setStorage:     {get: func(c *jetstream.StreamConfig) any { return c.Storage }, put: func(d, s *jetstream.StreamConfig) { d.Storage = s.Storage }, change: advisory},
	setMaxMsgs: {get: func(c *jetstream.StreamConfig) any { return c.MaxMsgs }, put: func(d, s *jetstream.StreamConfig) { d.MaxMsgs = s.MaxMsgs },
		loses: func(w *jetstream.StreamConfig, st jetstream.StreamState) bool {
			// DiscardNew refuses new messages over the limit; only
			// DiscardOld removes messages to fit it.
			return w.Discard == jetstream.DiscardOld && w.MaxMsgs > 0 && st.Msgs > uint64(w.MaxMsgs)
		}},
	setMaxBytes: {get: func(c *jetstream.StreamConfig) any { return c.MaxBytes }, put: func(d, s *jetstream.StreamConfig) { d.MaxBytes = s.MaxBytes },
		loses: func(w *jetstream.StreamConfig, st jetstream.StreamState) bool {
			return w.Discard == jetstream.DiscardOld && w.MaxBytes > 0 && st.Bytes > uint64(w.MaxBytes)
		}},
	setMaxAge: {get: func(c *jetstream.StreamConfig) any { return c.MaxAge }, put: func(d, s *jetstream.StreamConfig) { d.MaxAge = s.MaxAge },
		loses: func(w *jetstream.StreamConfig, st jetstream.StreamState) bool {
			// Whatever the discard policy, messages older than MaxAge go.
			return w.MaxAge > 0 && st.Msgs > 0 && time.Since(st.FirstTime) > w.MaxAge
		}},
	// A floor, not a value: raised when below want's, kept when above
	// (or unlimited). Raising an age never deletes a message.
	setMinMaxAge: {get: func(c *jetstream.StreamConfig) any { return c.MaxAge }, put: func(d, s *jetstream.StreamConfig) { d.MaxAge = s.MaxAge },
		enough: func(have, want *jetstream.StreamConfig) bool { return have.MaxAge == 0 || have.MaxAge >= want.MaxAge }},
	setMaxMsgsPerSubject: {get: func(c *jetstream.StreamConfig) any { return c.MaxMsgsPerSubject }, put: func(d, s *jetstream.StreamConfig) { d.MaxMsgsPerSubject = s.MaxMsgsPerSubject },
		loses: func(w *jetstream.StreamConfig, st jetstream.StreamState) bool {
			// Lowering the history of a bucket with values drops old revisions.
			return w.MaxMsgsPerSubject > 0 && st.Msgs > 0
		}},
	setDuplicates: {get: func(c *jetstream.StreamConfig) any { return c.Duplicates }, put: func(d, s *jetstream.StreamConfig) { d.Duplicates = s.Duplicates }},
	setReplicas:   {get: func(c *jetstream.StreamConfig) any { return c.Replicas }, put: func(d, s *jetstream.StreamConfig) { d.Replicas = s.Replicas }},
}

// streamSpec is one stream Ensure keeps.
type streamSpec struct {
	// want is the whole configuration a new stream gets.
	want jetstream.StreamConfig
	// set names the settings applied to a stream that exists (streamSettings keys).
	set []string
	// create makes the stream; nil means js.CreateStream(want). Key-value
	// buckets and object stores are created through their own API.
	create func(ctx context.Context) error
	// kind names the thing in messages: "stream", "key-value bucket", ...
	kind, name string
}

// ensureStream creates spec's stream or brings the settings in spec.set of
// the existing one to spec.want. Several processes may run it at once: a
// create that loses the race reads and updates what the winner made.
// Settings JetStream cannot change in place, and changes that would delete
// messages, are not applied: each is logged as a warning that names it, and
// a required one is also an error. Nothing is ever deleted and recreated.
func ensureStream(ctx context.Context, js jetstream.JetStream, log *slog.Logger, spec streamSpec) error {
	if spec.kind == "" {
		spec.kind, spec.name = "stream", spec.want.Name
	}
	what := fmt.Sprintf("%s %s", spec.kind, spec.name)
	s, err := js.Stream(ctx, spec.want.Name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		create := spec.create
		if create == nil {
			create = func(ctx context.Context) error { _, err := js.CreateStream(ctx, spec.want); return err }
		}
		err = create(ctx)
		if err == nil {
			log.Info("created "+spec.kind, "name", spec.name, "replicas", spec.want.Replicas, "storage", spec.want.Storage.String())
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && !errors.Is(err, jetstream.ErrBucketExists) {
			return fmt.Errorf("create %s: %w", what, err)
		}
		// Another process created it first, with other settings.
		s, err = js.Stream(ctx, spec.want.Name)
	}
	if err != nil {
		return fmt.Errorf("read %s: %w", what, err)
	}
	info := s.CachedInfo()
	cur := info.Config
	next := cur
	var changes []string
	var replicasChanged bool
	var errs []error
	for _, name := range spec.set {
		st, ok := streamSettings[name]
		if !ok {
			panic("queue: unknown stream setting " + name)
		}
		have, want := st.get(&cur), st.get(&spec.want)
		if reflect.DeepEqual(have, want) || (st.enough != nil && st.enough(&cur, &spec.want)) {
			continue
		}
		switch {
		case st.change != inPlace:
			log.Warn("JetStream cannot change this setting in place; kept the existing one and its data (to apply it, move the data to a new "+spec.kind+" yourself)",
				"name", spec.name, "setting", name, "have", show(have), "want", show(want))
			if st.change == required {
				errs = append(errs, fmt.Errorf("%s: %s is %s on the server, laas-bridge needs %s; JetStream cannot change it in place and laas-bridge does not delete data: move the messages and delete the %s yourself",
					what, name, show(have), show(want), spec.kind))
			}
			continue
		case st.loses != nil:
			probe := next
			st.put(&probe, &spec.want)
			if st.loses(&probe, info.State) {
				log.Warn("not applied: the new limit would delete stored messages; kept the existing one",
					"name", spec.name, "setting", name, "have", show(have), "want", show(want), "messages", info.State.Msgs, "bytes", info.State.Bytes)
				continue
			}
		}
		st.put(&next, &spec.want)
		changes = append(changes, fmt.Sprintf("%s %s -> %s", name, show(have), show(want)))
		replicasChanged = replicasChanged || name == setReplicas
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if len(changes) == 0 {
		return nil
	}
	// The server refuses a duplicate window longer than MaxAge.
	if next.MaxAge > 0 && next.Duplicates > next.MaxAge {
		next.Duplicates = next.MaxAge
	}
	_, err = js.UpdateStream(ctx, next)
	if err != nil && replicasChanged {
		// A cluster too small for the replicas asked for: apply the rest.
		refused := err
		next.Replicas = cur.Replicas
		changes = dropChange(changes, setReplicas)
		if len(changes) == 0 {
			err = nil
		} else {
			_, err = js.UpdateStream(ctx, next)
		}
		if err == nil {
			log.Warn("the server refused to change the replicas; kept the existing number", "name", spec.name, "setting", setReplicas,
				"have", cur.Replicas, "want", spec.want.Replicas, "error", refused)
		}
	}
	if err != nil {
		return fmt.Errorf("update %s (%s): %w", what, strings.Join(changes, ", "), err)
	}
	if len(changes) > 0 {
		log.Info("updated "+spec.kind, "name", spec.name, "changes", strings.Join(changes, ", "))
	}
	return nil
}

// consumerSetting is one consumer setting Ensure can compare and apply.
type consumerSetting struct {
	get    func(*jetstream.ConsumerConfig) any
	put    func(dst, src *jetstream.ConsumerConfig)
	change change
}

var consumerSettings = map[string]consumerSetting{
	setDescription:   {get: func(c *jetstream.ConsumerConfig) any { return c.Description }, put: func(d, s *jetstream.ConsumerConfig) { d.Description = s.Description }},
	setFilterSubject: {get: func(c *jetstream.ConsumerConfig) any { return c.FilterSubject }, put: func(d, s *jetstream.ConsumerConfig) { d.FilterSubject = s.FilterSubject }},
	setAckPolicy:     {get: func(c *jetstream.ConsumerConfig) any { return c.AckPolicy }, put: func(d, s *jetstream.ConsumerConfig) { d.AckPolicy = s.AckPolicy }, change: required},
	setAckWait:       {get: func(c *jetstream.ConsumerConfig) any { return c.AckWait }, put: func(d, s *jetstream.ConsumerConfig) { d.AckWait = s.AckWait }},
	setMaxDeliver:    {get: func(c *jetstream.ConsumerConfig) any { return c.MaxDeliver }, put: func(d, s *jetstream.ConsumerConfig) { d.MaxDeliver = s.MaxDeliver }},
	setMaxAckPending: {get: func(c *jetstream.ConsumerConfig) any { return c.MaxAckPending }, put: func(d, s *jetstream.ConsumerConfig) { d.MaxAckPending = s.MaxAckPending }},
	setReplicas:      {get: func(c *jetstream.ConsumerConfig) any { return c.Replicas }, put: func(d, s *jetstream.ConsumerConfig) { d.Replicas = s.Replicas }},
}

// ensureConsumer is ensureStream for a durable consumer of stream.
func ensureConsumer(ctx context.Context, js jetstream.JetStream, log *slog.Logger, stream string, want jetstream.ConsumerConfig, set []string) (jetstream.Consumer, error) {
	what := fmt.Sprintf("consumer %s of stream %s", want.Durable, stream)
	cons, err := js.Consumer(ctx, stream, want.Durable)
	if errors.Is(err, jetstream.ErrConsumerNotFound) {
		cons, err = js.CreateConsumer(ctx, stream, want)
		if err == nil {
			log.Info("created consumer", "stream", stream, "name", want.Durable, "replicas", want.Replicas)
			return cons, nil
		}
		if !errors.Is(err, jetstream.ErrConsumerExists) {
			return nil, fmt.Errorf("create %s: %w", what, err)
		}
		cons, err = js.Consumer(ctx, stream, want.Durable)
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	cur := cons.CachedInfo().Config
	next := cur
	var changes []string
	var errs []error
	for _, name := range set {
		st, ok := consumerSettings[name]
		if !ok {
			panic("queue: unknown consumer setting " + name)
		}
		have, wantV := st.get(&cur), st.get(&want)
		if reflect.DeepEqual(have, wantV) {
			continue
		}
		if st.change != inPlace {
			log.Warn("JetStream cannot change this consumer setting in place; kept the existing one", "stream", stream, "name", want.Durable,
				"setting", name, "have", show(have), "want", show(wantV))
			if st.change == required {
				errs = append(errs, fmt.Errorf("%s: %s is %s on the server, laas-bridge needs %s; JetStream cannot change it in place: delete the consumer yourself (its pending messages stay in the stream)",
					what, name, show(have), show(wantV)))
			}
			continue
		}
		st.put(&next, &want)
		changes = append(changes, fmt.Sprintf("%s %s -> %s", name, show(have), show(wantV)))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if len(changes) == 0 {
		return cons, nil
	}
	updated, err := js.UpdateConsumer(ctx, stream, next)
	if err != nil && cur.Replicas != next.Replicas {
		refused := err
		next.Replicas = cur.Replicas
		if changes = dropChange(changes, setReplicas); len(changes) == 0 {
			updated, err = js.Consumer(ctx, stream, want.Durable)
		} else {
			updated, err = js.UpdateConsumer(ctx, stream, next)
		}
		if err == nil {
			log.Warn("the server refused to change the consumer's replicas; kept the existing number", "stream", stream, "name", want.Durable,
				"setting", setReplicas, "have", cur.Replicas, "want", want.Replicas, "error", refused)
			if len(changes) == 0 {
				return updated, nil
			}
		}
	}
	if err != nil {
		return nil, fmt.Errorf("update %s (%s): %w", what, strings.Join(changes, ", "), err)
	}
	log.Info("updated consumer", "stream", stream, "name", want.Durable, "changes", strings.Join(changes, ", "))
	return updated, nil
}

// show prints a setting's value for a log line or an error.
func show(v any) string {
	switch v := v.(type) {
	case fmt.Stringer:
		return v.String()
	case []string:
		return "[" + strings.Join(v, " ") + "]"
	}
	return fmt.Sprint(v)
}

func dropChange(changes []string, name string) []string {
	out := changes[:0:0]
	for _, c := range changes {
		if !strings.HasPrefix(c, name+" ") {
			out = append(out, c)
		}
	}
	return out
}

// setIf returns names with name appended when explicit is true.
func setIf(names []string, explicit bool, name string) []string {
	if explicit {
		return append(names, name)
	}
	return names
}
