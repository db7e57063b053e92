package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/batch"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// natsBatchClient works on the Batch API's JetStream state directly
// (LAAS_FILES, LAAS_BATCHES): the gateways' batch runners pick up what it
// creates, exactly as if it had come over HTTP. For hosts that reach NATS
// but no gateway.
type natsBatchClient struct {
	nc       *nats.Conn
	store    *batch.Store
	maxBytes int64
}

func newNATSBatchClient(ctx context.Context, url string, maxBytes int64) (*natsBatchClient, error) {
	nc, err := queue.Connect(url, "laas-bridge batch", slog.New(slog.DiscardHandler))
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	octx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	store, err := batch.Open(octx, js)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("open the Batch API's buckets (has a gateway started on this NATS?): %w", err)
	}
	return &natsBatchClient{nc: nc, store: store, maxBytes: maxBytes}, nil
}

func (n *natsBatchClient) close() { n.nc.Close() }

func (n *natsBatchClient) submit(ctx context.Context, name string, r io.Reader, metadata map[string]string) (batchInfo, error) {
	// The same limits POST /v1/files applies, checked while storing.
	counted := batch.NewLineCounter(r, n.maxBytes)
	id := batch.NewFileID()
	f, err := n.store.PutFile(ctx, id, name, schema.PurposeBatch, 0, counted)
	if err == nil && counted.Lines() == 0 {
		err = errors.New("the file is empty; a batch input file holds one JSON request per line")
	}
	if err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = n.store.DeleteFile(dctx, id) // a partial object, if any
		switch {
		case counted.Over:
			return batchInfo{}, fmt.Errorf("upload %s: larger than %d bytes", name, n.maxBytes)
		case counted.TooMany:
			return batchInfo{}, fmt.Errorf("upload %s: more than %d lines", name, schema.MaxBatchLines)
		}
		return batchInfo{}, fmt.Errorf("upload %s: %w", name, err)
	}
	rec := &batch.Record{Batch: batch.NewBatch(f.ID, metadata, time.Now())}
	if err := n.store.CreateBatch(ctx, rec); err != nil {
		return batchInfo{}, fmt.Errorf("create batch on %s: %w", f.ID, err)
	}
	return fromBatch(rec.Batch), nil
}

func (n *natsBatchClient) get(ctx context.Context, id string) (batchInfo, error) {
	rec, _, err := n.store.Batch(ctx, id)
	if err != nil {
		return batchInfo{}, natsBatchErr(id, err)
	}
	return fromBatch(rec.Batch), nil
}

func (n *natsBatchClient) cancel(ctx context.Context, id string) (batchInfo, error) {
	rec, err := n.store.Cancel(ctx, id, time.Now())
	switch {
	case err == nil, batch.IsUnchanged(err):
		return fromBatch(rec.Batch), nil
	case errors.Is(err, batch.ErrNotCancellable):
		return batchInfo{}, fmt.Errorf("cancel batch %s: it is %s", id, rec.Batch.Status)
	}
	return batchInfo{}, natsBatchErr(id, err)
}

func (n *natsBatchClient) content(ctx context.Context, fileID string) (io.ReadCloser, error) {
	if !batch.ValidFileID(fileID) {
		return nil, fmt.Errorf("file %s: not found", fileID)
	}
	r, err := n.store.OpenFile(ctx, fileID)
	if err != nil {
		return nil, fmt.Errorf("file %s: %w", fileID, err)
	}
	return r, nil
}

func natsBatchErr(id string, err error) error {
	if errors.Is(err, batch.ErrNotFound) {
		return fmt.Errorf("batch %s: not found", id)
	}
	return fmt.Errorf("batch %s: %w", id, err)
}

func fromBatch(b schema.Batch) batchInfo {
	var i batchInfo
	i.ID, i.Status, i.InputFileID, i.CreatedAt = b.ID, string(b.Status), b.InputFileID, b.CreatedAt
	if b.OutputFileID != nil {
		i.OutputFileID = *b.OutputFileID
	}
	if b.ErrorFileID != nil {
		i.ErrorFileID = *b.ErrorFileID
	}
	i.Counts.Total, i.Counts.Completed, i.Counts.Failed = int64(b.RequestCounts.Total), int64(b.RequestCounts.Completed), int64(b.RequestCounts.Failed)
	if b.Errors != nil {
		for _, e := range b.Errors.Data {
			s := e.Message
			if e.Code != "" {
				s = e.Code + ": " + s
			}
			if e.Line != nil && *e.Line > 0 {
				s = fmt.Sprintf("line %d: %s", *e.Line, s)
			}
			i.Errors = append(i.Errors, s)
		}
	}
	return i
}
