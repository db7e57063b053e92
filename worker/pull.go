package worker

// This file holds how the pool fetches jobs from its two lanes'
// consumers: interactive jobs first, batch jobs for the slots left.

import (
	"context"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// idlePull is how long a pull waits for an interactive job when neither
// lane has one; a batch job arriving meanwhile waits at most this long.
const idlePull = time.Second

// pull fetches up to n jobs and hands each to start, interactive jobs
// first: it waits (up to idlePull) for interactive jobs unless the batch
// lane had jobs last time, then takes what the batch lane has for the slots
// still free. It returns how many jobs start took, and whether the batch
// lane had any.
func (p *Pool) pull(ctx context.Context, n int, batchBusy bool, start func(jetstream.Msg) bool) (started int, batchHad bool) {
	run := func(b jetstream.MessageBatch, err error) (int, error) {
		if err != nil {
			return 0, err
		}
		got := 0
		for msg := range b.Messages() {
			if start(msg) {
				got++
			}
		}
		return got, b.Error()
	}
	var err error
	if batchBusy {
		started, err = run(p.cons.FetchNoWait(n))
	} else {
		started, err = run(p.cons.Fetch(n, jetstream.FetchMaxWait(idlePull)))
	}
	if err == nil && started < n && ctx.Err() == nil {
		var got int
		got, err = run(p.batch.FetchNoWait(n - started))
		started += got
		batchHad = got > 0
	}
	if err != nil && ctx.Err() == nil {
		p.log.Warn("pull failed", "error", err)
		select {
		case <-time.After(100 * time.Millisecond):
		case <-ctx.Done():
		}
	}
	return started, batchHad
}
