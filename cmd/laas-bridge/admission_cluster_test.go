package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// TestEveryDoorPublishesThroughFailover: on a 3-node cluster with R3
// streams, the node that leads the request stream is killed with SIGKILL,
// and at once one request of each door's kind is admitted (a waiting HTTP
// or NATS caller, an HTTP job, a batch line, a direct producer's job, a
// replayed dead letter). The stream has no leader for seconds; every admit
// waits the election out and succeeds, and each request is queued exactly
// once. Every door goes through admission.Core.Admit (TestDoorsRefuseAlike
// shows they all reach the core), so this covers them all.
func TestEveryDoorPublishesThroughFailover(t *testing.T) {
	begin := time.Now()
	cluster := startCluster(t, 3)
	js := cluster.connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if _, err := queue.Ensure(ctx, js, queue.Config{Replicas: 3}, queue.WithLogger(slog.New(slog.DiscardHandler))); err != nil {
		t.Fatal(err)
	}
	catalog, err := schema.NewCatalog([]schema.Model{{Alias: "m", LaaSModel: "claude-4-sonnet", PresetHash: "p"}})
	if err != nil {
		t.Fatal(err)
	}
	core, err := admission.Open(ctx, admission.Config{PublishTimeout: time.Minute}, js, catalog, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	leader := streamLeader(t, ctx, js, schema.StreamRequests)
	t.Logf("cluster up and provisioned in %s; %s leads %s", time.Since(begin).Round(time.Millisecond), leader, schema.StreamRequests)
	// The buckets the core reads and writes before publishing keep their
	// leaders: this test is about the request stream's election (the core
	// retries the buckets across their own elections too).
	moveLeaderOff(t, ctx, js, "KV_"+schema.BucketJobs, leader)
	moveLeaderOff(t, ctx, js, "KV_"+schema.BucketAnswers, leader)

	body := []byte(`{"model":"m","messages":[{"role":"user","content":"hi"}]}`)
	requests := []admission.Request{
		{ID: "chat-1", Door: admission.DoorChat, Body: body, ReplyTo: "laas.reply.gw1.chat-1"},
		{ID: "micro-1", Door: admission.DoorMicro, Body: body, ReplyTo: "laas.reply.gw1.micro-1", IdempotencyKey: "k"},
		{ID: "job-1", Door: admission.DoorJobs, Body: body, Job: &admission.Job{Record: true}},
		{ID: "line-1", Door: admission.DoorBatch, Body: body, Line: &admission.BatchLine{BatchID: "b1", Line: 0}, MediaChecked: true},
		{ID: "producer-1", Door: admission.DoorProducer, Body: body, Job: &admission.Job{}},
		{ID: "r1-replay-3", Door: admission.DoorReplay, Body: body, Job: &admission.Job{Record: true}},
	}
	checked := make([]*admission.Checked, len(requests))
	for i, r := range requests {
		if checked[i], err = core.Check(r); err != nil {
			t.Fatalf("%s: %v", r.ID, err)
		}
	}
	killed := cluster.node(t, leader)
	_ = killed.cmd.Process.Signal(syscall.SIGKILL)
	start := time.Now()
	errs := make(chan error, len(checked))
	for _, ck := range checked {
		go func() {
			t, err := core.Admit(ctx, ck)
			if err == nil && t.Duplicate {
				err = errors.New("admitted as a duplicate")
			}
			if err != nil {
				err = fmt.Errorf("%s (%s): %w", ck.ID, ck.Door, err)
			}
			errs <- err
		}()
	}
	for range checked {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	t.Logf("killed %s, the leader of %s; every door admitted within %s; new leader %s",
		leader, schema.StreamRequests, time.Since(start).Round(time.Millisecond), streamLeader(t, ctx, js, schema.StreamRequests))

	// Each request once, on its lane.
	s, err := js.Stream(ctx, schema.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		var env schema.Envelope
		if err := json.Unmarshal(m.Data, &env); err != nil {
			t.Fatal(err)
		}
		if want := map[bool]string{true: schema.SubjectBatch, false: schema.SubjectInteractive}[env.Job || env.IdempotencyKey == "batch.b1.0"]; m.Subject != want {
			t.Errorf("%s queued on %s, want %s", env.ID, m.Subject, want)
		}
		seen[env.ID]++
	}
	for _, r := range requests {
		if seen[r.ID] != 1 {
			t.Errorf("%s queued %d times, want once", r.ID, seen[r.ID])
		}
	}
}

// streamLeader is the name of the node that leads stream.
func streamLeader(t *testing.T, ctx context.Context, js jetstream.JetStream, stream string) string {
	t.Helper()
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		s, err := js.Stream(ctx, stream)
		if err == nil && s.CachedInfo().Cluster != nil && s.CachedInfo().Cluster.Leader != "" {
			return s.CachedInfo().Cluster.Leader
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("%s has no leader after a minute: %v", stream, err)
		}
	}
}

// moveLeaderOff asks stream's leader to step down until another node than
// node leads it.
func moveLeaderOff(t *testing.T, ctx context.Context, js jetstream.JetStream, stream, node string) {
	t.Helper()
	for range 10 {
		if streamLeader(t, ctx, js, stream) != node {
			return
		}
		if _, err := js.Conn().RequestWithContext(ctx, "$JS.API.STREAM.LEADER.STEPDOWN."+stream, nil); err != nil {
			t.Fatalf("step down the leader of %s: %v", stream, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s is still led by %s after 10 step-downs", stream, node)
}
