package batch

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// chunkReader reads an object of the files bucket one chunk at a time,
// each fetched by sequence when the reader needs it (the first message
// of the object's chunk subject at or after the next sequence). Unlike
// the object store's Get, an ordered push consumer that runs ahead of
// its reader by up to JetStream's flow-control window (~32 MiB), it holds
// one chunk (128 KiB): a runner reads a 200 MiB input file in constant
// memory, and keeps it open for as long as a batch runs at no cost. It
// checks the object's size and digest as Get does.
type chunkReader struct {
	ctx    context.Context
	stream jetstream.Stream
	subj   string
	seq    uint64 // where the next chunk is looked for
	left   uint64 // bytes of the object not read yet
	want   []byte // the object's SHA-256
	digest hash.Hash
	cur    []byte
	closed bool
	// fetched counts the chunks fetched.
	fetched int
}

// errReaderClosed is Read's error after Close.
var errReaderClosed = errors.New("object reader closed")

// chunkTimeout bounds the fetch of one chunk.
const chunkTimeout = 30 * time.Second

func (r *chunkReader) Read(p []byte) (int, error) {
	for len(r.cur) == 0 {
		if r.closed {
			return 0, errReaderClosed
		}
		if r.left == 0 {
			if !bytes.Equal(r.digest.Sum(nil), r.want) {
				return 0, jetstream.ErrDigestMismatch
			}
			return 0, io.EOF
		}
		ctx, cancel := context.WithTimeout(r.ctx, chunkTimeout)
		m, err := r.stream.GetMsg(ctx, r.seq, jetstream.WithGetMsgSubject(r.subj))
		cancel()
		if err != nil {
			return 0, fmt.Errorf("read chunk after sequence %d: %w", r.seq, err)
		}
		if uint64(len(m.Data)) > r.left {
			return 0, fmt.Errorf("object chunks longer than its size")
		}
		r.fetched++
		r.seq, r.left, r.cur = m.Sequence+1, r.left-uint64(len(m.Data)), m.Data
		r.digest.Write(m.Data)
	}
	n := copy(p, r.cur)
	r.cur = r.cur[n:]
	return n, nil
}

// Close ends the reader; it holds nothing on the server.
func (r *chunkReader) Close() error {
	r.closed, r.cur = true, nil
	return nil
}

// openObject returns a reader of an object of the files bucket (a file,
// or a batch's plan) that fetches its chunks as it is read; ctx bounds
// each fetch. ErrNotFound for an object that does not exist, and for a
// name that is neither a file's (ValidFileID) nor a batch's plan.
func (s *Store) openObject(ctx context.Context, name string) (io.ReadCloser, error) {
	if !ValidFileID(name) && !(strings.HasSuffix(name, ".plan") && ValidBatchID(strings.TrimSuffix(name, ".plan"))) {
		return nil, ErrNotFound
	}
	info, err := s.files.GetInfo(ctx, name)
	if errors.Is(err, jetstream.ErrObjectNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if info.Opts != nil && info.Opts.Link != nil {
		return nil, fmt.Errorf("object %s is a link", name)
	}
	want, err := jetstream.DecodeObjectDigest(info.Digest)
	if err != nil {
		return nil, fmt.Errorf("object %s: %w", name, err)
	}
	return &chunkReader{ctx: ctx, stream: s.filesStream, subj: "$O." + schema.BucketFiles + ".C." + info.NUID, seq: 1,
		left: info.Size, want: want, digest: sha256.New()}, nil
}
