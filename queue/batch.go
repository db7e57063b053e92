package queue

import (
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// --- OpenAI Batch API (bridge batches) ---

// Sizes of the Batch API's buckets.
const (
	// FilesTTL is how long an uploaded file and a batch's output files are
	// kept: OpenAI's default for purpose=batch, 30 days.
	FilesTTL = 30 * 24 * time.Hour
	// DefaultFilesMaxBytes bounds the files bucket (MemoryFilesMaxBytes
	// with Config.Memory set).
	DefaultFilesMaxBytes = 20 << 30
	MemoryFilesMaxBytes  = 64 << 20
	// BatchesTTL removes a batch record nobody updated for this long, as
	// its files are gone by then.
	BatchesTTL = FilesTTL
)

// FilesConfig returns the Object Store of uploaded and output files.
func (c Config) FilesConfig() jetstream.ObjectStoreConfig {
	c.setDefaults()
	maxBytes := int64(DefaultFilesMaxBytes)
	if c.Memory {
		maxBytes = MemoryFilesMaxBytes
	}
	return jetstream.ObjectStoreConfig{
		Bucket:      schema.BucketFiles,
		Description: "laas-bridge Batch API files: inputs, outputs, errors",
		TTL:         FilesTTL,
		MaxBytes:    maxBytes,
		Storage:     c.storage(),
		Replicas:    c.Replicas,
	}
}

// BatchesConfig returns the KV bucket of batch records. Every write to a
// record is a compare-and-set on its revision, so one history entry is
// enough.
func (c Config) BatchesConfig() jetstream.KeyValueConfig {
	c.setDefaults()
	return jetstream.KeyValueConfig{
		Bucket:      schema.BucketBatches,
		Description: "laas-bridge Batch API: batch records and their runners' leases",
		History:     1,
		TTL:         BatchesTTL,
		Storage:     c.storage(),
		Replicas:    c.Replicas,
	}
}
