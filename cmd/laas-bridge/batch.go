package main

import (
	"context"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/batch"
)

// startBatchRunner runs this gateway's batch runner until the returned
// func is called (or ctx is done); the func waits for it to stop.
func startBatchRunner(ctx context.Context, js jetstream.JetStream, core *admission.Core, env Env, log *slog.Logger) (stop func(), err error) {
	octx, cancel := context.WithTimeout(ctx, 30*time.Second)
	store, err := batch.Open(octx, js)
	cancel()
	if err != nil {
		return nil, err
	}
	// Batch lines honour the body limit of every request.
	runner, err := batch.NewRunner(batch.RunnerConfig{MaxActive: env.BatchMaxActive, MaxBodyBytes: env.MaxBody}, js, store, core, log)
	if err != nil {
		return nil, err
	}
	rctx, cancelRun := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = runner.Run(rctx)
	}()
	return func() { cancelRun(); <-done }, nil
}
