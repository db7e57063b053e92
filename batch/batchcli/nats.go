package batchcli

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
	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// NATSClient works on the Batch API's JetStream state directly
// (LAAS_FILES, LAAS_BATCHES): the gateways' batch runners pick up what it
// creates, exactly as if it had come over HTTP. For hosts that reach NATS
// but no gateway.
type NATSClient struct {
	nc       *nats.Conn
	store    *batch.Store
	maxBytes int64
}

// NewNATSClient connects to the NATS servers at url and opens the Batch
// API's buckets, which a gateway creates; ctx bounds opening them (at most
// 10s). maxBytes caps an uploaded file, as POST /v1/files does. opts go
// to queue.Connect: the client's queue.Identity. Close it.
func NewNATSClient(ctx context.Context, url string, maxBytes int64, opts ...nats.Option) (*NATSClient, error) {
	nc, err := queue.Connect(url, "laas-bridge batch", slog.New(slog.DiscardHandler), opts...)
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
	return &NATSClient{nc: nc, store: store, maxBytes: maxBytes}, nil
}

// Close closes the NATS connection.
func (n *NATSClient) Close() { n.nc.Close() }

// Submit stores the file under the limits POST /v1/files applies and
// creates a batch record on it. Files and batches made over NATS belong
// to the admin (no owner): whoever reaches the stores is the operator.
func (n *NATSClient) Submit(ctx context.Context, name string, r io.Reader, metadata map[string]string) (Batch, error) {
	counted := batch.NewLineCounter(r, n.maxBytes)
	id := batch.NewFileID()
	f, err := n.store.PutFile(ctx, id, "", name, schema.PurposeBatch, 0, counted)
	if err == nil && counted.Lines() == 0 {
		err = errors.New("the file is empty; a batch input file holds one JSON request per line")
	}
	if err != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		_ = n.store.DeleteFile(dctx, id) // a partial object, if any
		switch {
		case counted.Over:
			return Batch{}, fmt.Errorf("upload %s: larger than %d bytes", name, n.maxBytes)
		case counted.TooMany:
			return Batch{}, fmt.Errorf("upload %s: more than %d lines", name, schema.MaxBatchLines)
		}
		return Batch{}, fmt.Errorf("upload %s: %w", name, err)
	}
	rec := &batch.Record{Batch: batch.NewBatch(f.ID, metadata, time.Now())}
	if err := n.store.CreateBatch(ctx, rec); err != nil {
		return Batch{}, fmt.Errorf("create batch on %s: %w", f.ID, err)
	}
	return fromSchema(rec.Batch), nil
}

// Get returns batch id.
func (n *NATSClient) Get(ctx context.Context, id string) (Batch, error) {
	rec, _, err := n.store.Batch(ctx, id)
	if err != nil {
		return Batch{}, natsErr(id, err)
	}
	return fromSchema(rec.Batch), nil
}

// Cancel marks batch id cancelling; the runner that holds it stops it.
func (n *NATSClient) Cancel(ctx context.Context, id string) (Batch, error) {
	rec, err := n.store.Cancel(ctx, keys.Caller{}, id, time.Now())
	switch {
	case err == nil, batch.IsUnchanged(err):
		return fromSchema(rec.Batch), nil
	case errors.Is(err, batch.ErrNotCancellable):
		return Batch{}, fmt.Errorf("cancel batch %s: it is %s", id, rec.Batch.Status)
	}
	return Batch{}, natsErr(id, err)
}

// Content returns the bytes of file fileID.
func (n *NATSClient) Content(ctx context.Context, fileID string) (io.ReadCloser, error) {
	if !batch.ValidFileID(fileID) {
		return nil, fmt.Errorf("file %s: not found", fileID)
	}
	r, err := n.store.OpenFile(ctx, fileID)
	if err != nil {
		return nil, fmt.Errorf("file %s: %w", fileID, err)
	}
	return r, nil
}

func natsErr(id string, err error) error {
	if errors.Is(err, batch.ErrNotFound) {
		return fmt.Errorf("batch %s: not found", id)
	}
	return fmt.Errorf("batch %s: %w", id, err)
}

func fromSchema(b schema.Batch) Batch {
	var i Batch
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
