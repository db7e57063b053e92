package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// startNATSConf runs an in-process nats-server from a configuration text.
func startNATSConf(t *testing.T, conf string) *server.Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "nats.conf")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	opts, err := server.ProcessConfigFile(path)
	if err != nil {
		t.Fatal(err)
	}
	opts.NoSigs, opts.NoLog = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server did not start within 10s")
	}
	return s
}

// startClusterNode runs one in-process server of a JetStream cluster whose
// servers take routes on routePorts; this one takes them on routePorts[i].
// Until a majority of routePorts is up, the cluster has no meta leader and
// JetStream requests go unanswered.
func startClusterNode(t *testing.T, i int, routePorts []int) *server.Server {
	t.Helper()
	routes := make([]string, len(routePorts))
	for j, p := range routePorts {
		routes[j] = fmt.Sprintf("nats://127.0.0.1:%d", p)
	}
	return startNATSConf(t, fmt.Sprintf(`server_name: n%d
listen: 127.0.0.1:-1
jetstream { store_dir: %q }
cluster { name: ensure-test, listen: "127.0.0.1:%d", routes: [%s] }
`, i+1, t.TempDir(), routePorts[i], strings.Join(routes, ", ")))
}

// ensureCalls wraps queue.Ensure and records each call's error.
type ensureCalls struct {
	js   jetstream.JetStream
	mu   sync.Mutex
	errs []error
	// failed gets a value after each failed call (when nobody waits, the
	// value is dropped).
	failed chan struct{}
}

func newEnsureCalls(t *testing.T, url string) *ensureCalls {
	t.Helper()
	return &ensureCalls{js: connectJS(t, url), failed: make(chan struct{}, 1)}
}

func (c *ensureCalls) ensure(ctx context.Context) (jetstream.Consumer, error) {
	cons, err := queue.Ensure(ctx, c.js, queue.Config{}, queue.WithLogger(slog.New(slog.DiscardHandler)))
	c.mu.Lock()
	c.errs = append(c.errs, err)
	c.mu.Unlock()
	if err != nil {
		select {
		case c.failed <- struct{}{}:
		default:
		}
	}
	return cons, err
}

func (c *ensureCalls) calls() []error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]error(nil), c.errs...)
}

type ensureResult struct {
	cons jetstream.Consumer
	err  error
}

// runRetryEnsure runs retryEnsure in the background, logging to logs.
func runRetryEnsure(t *testing.T, p ensurePatience, c *ensureCalls, logs *syncBuffer) <-chan ensureResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	done := make(chan ensureResult, 1)
	go func() {
		cons, err := retryEnsure(ctx, p, slog.New(slog.NewTextHandler(logs, nil)), c.ensure)
		done <- ensureResult{cons, err}
	}()
	return done
}

func waitEnsure(t *testing.T, done <-chan ensureResult) ensureResult {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(2 * time.Minute):
		t.Fatal("retryEnsure did not return within 2 minutes")
		return ensureResult{}
	}
}

const notReadyLog = "JetStream is not ready yet"

// A process started before its cluster has a meta leader waits for one,
// then provisions the queue.
func TestEnsureQueueWaitsForMetaLeader(t *testing.T) {
	routes := []int{freePort(t), freePort(t)}
	n1 := startClusterNode(t, 0, routes)
	c := newEnsureCalls(t, n1.ClientURL())
	var logs syncBuffer
	done := runRetryEnsure(t, ensurePatience{attempt: 500 * time.Millisecond, wait: 2 * time.Minute, pause: 50 * time.Millisecond}, c, &logs)

	// Two attempts fail while n1 is alone: no majority, no meta leader.
	for range 2 {
		select {
		case <-c.failed:
		case r := <-done:
			t.Fatalf("retryEnsure returned while the cluster had no meta leader: %v", r.err)
		case <-time.After(time.Minute):
			t.Fatal("no attempt failed within a minute")
		}
	}
	startClusterNode(t, 1, routes)

	r := waitEnsure(t, done)
	if r.err != nil {
		t.Fatalf("retryEnsure after the second node started: %v\nlogs:\n%s", r.err, logs.String())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if info, err := r.cons.Info(ctx); err != nil || info.Stream != schema.StreamRequests {
		t.Fatalf("consumer after retryEnsure: info %+v, error %v", info, err)
	}
	calls := c.calls()
	if len(calls) < 3 || calls[len(calls)-1] != nil {
		t.Fatalf("calls to Ensure: %v; want at least two failures, then a success", calls)
	}
	for _, err := range calls[:len(calls)-1] {
		if !errors.Is(err, context.DeadlineExceeded) && !strings.Contains(err.Error(), "temporarily unavailable") {
			t.Errorf("a failed attempt: %v; want no answer (deadline) or JetStream temporarily unavailable", err)
		}
	}
	if got := strings.Count(logs.String(), notReadyLog); got != len(calls)-1 {
		t.Errorf("%q logged %d times for %d failed attempts; logs:\n%s", notReadyLog, got, len(calls)-1, logs.String())
	}
}

// An error that is not JetStream being unavailable ends it at once.
func TestEnsureQueueStopsOnOtherErrors(t *testing.T) {
	s := startNATSConf(t, fmt.Sprintf(`listen: 127.0.0.1:-1
jetstream { store_dir: %q }
accounts {
  JS: { jetstream: enabled, users: [{user: js, password: js}] }
  PLAIN: { users: [{user: plain, password: plain}] }
}
`, t.TempDir()))
	c := newEnsureCalls(t, strings.Replace(s.ClientURL(), "nats://", "nats://plain:plain@", 1))
	var logs syncBuffer
	// A budget that outlasts the test: only the error can end it.
	r := waitEnsure(t, runRetryEnsure(t, ensurePatience{attempt: 10 * time.Second, wait: 10 * time.Minute, pause: 50 * time.Millisecond}, c, &logs))
	if !errors.Is(r.err, jetstream.ErrJetStreamNotEnabledForAccount) {
		t.Fatalf("retryEnsure for an account without JetStream: %v; want %v", r.err, jetstream.ErrJetStreamNotEnabledForAccount)
	}
	if n := len(c.calls()); n != 1 {
		t.Errorf("Ensure called %d times; want 1", n)
	}
	if strings.Contains(logs.String(), notReadyLog) {
		t.Errorf("logged a retry for an error that is not retried:\n%s", logs.String())
	}
}

// A cluster that never elects a meta leader ends it after the wait, with
// an error that says so and wraps the last attempt's.
func TestEnsureQueueGivesUpAfterWait(t *testing.T) {
	routes := []int{freePort(t), freePort(t)}
	n1 := startClusterNode(t, 0, routes)
	c := newEnsureCalls(t, n1.ClientURL())
	var logs syncBuffer
	r := waitEnsure(t, runRetryEnsure(t, ensurePatience{attempt: 300 * time.Millisecond, wait: 2 * time.Second, pause: 50 * time.Millisecond}, c, &logs))
	if r.err == nil {
		t.Fatal("retryEnsure succeeded on a cluster without a meta leader")
	}
	if want := "JetStream was not ready within 2s"; !strings.Contains(r.err.Error(), want) {
		t.Errorf("error %q; want it to contain %q", r.err, want)
	}
	calls := c.calls()
	if last := calls[len(calls)-1]; !errors.Is(r.err, last) || !errors.Is(r.err, context.DeadlineExceeded) {
		t.Errorf("error %v; want it to wrap the last attempt's (%v), a deadline", r.err, last)
	}
	if len(calls) < 2 {
		t.Errorf("Ensure called %d times within the wait; want at least 2", len(calls))
	}
}
