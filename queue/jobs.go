package queue

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Defaults of the job settings in Config.
const (
	DefaultResultsTTL      = 24 * time.Hour
	DefaultResultsMaxBytes = 1 << 30
	MemoryResultsMaxBytes  = 64 << 20 // the default with Memory set
)

func (c Config) resultsTTL() time.Duration {
	if c.ResultsTTL == 0 {
		return DefaultResultsTTL
	}
	return c.ResultsTTL
}

func (c Config) resultsMaxBytes() int64 {
	switch {
	case c.ResultsMaxBytes != 0:
		return c.ResultsMaxBytes
	case c.Memory:
		return MemoryResultsMaxBytes
	}
	return DefaultResultsMaxBytes
}

// validateJobs checks the job settings; zero values mean the defaults.
func (c Config) validateJobs() []error {
	var errs []error
	if c.ResultsTTL != 0 && c.ResultsTTL < time.Minute {
		errs = append(errs, fmt.Errorf("job results TTL must be at least 1m, got %s", c.ResultsTTL))
	}
	if c.ResultsMaxBytes != 0 && c.ResultsMaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("job results max bytes must be at least 1 MiB, got %d", c.ResultsMaxBytes))
	}
	return errs
}

// ResultsConfig returns the stream of job results: a limits stream
// (reading does not consume) on laas.results.>, one message per subject
// (a results subject ends in its job id, so one per job), kept ResultsTTL,
// oldest dropped first when full. Its duplicate window drops a result
// published twice by a worker that crashed before acknowledging its job.
func (c Config) ResultsConfig() jetstream.StreamConfig {
	c.setDefaults()
	return jetstream.StreamConfig{
		Name:              schema.StreamResults,
		Description:       "laas-bridge job results, kept for producers to collect",
		Subjects:          []string{schema.SubjectResults + ".>"},
		Retention:         jetstream.LimitsPolicy,
		Discard:           jetstream.DiscardOld,
		MaxAge:            c.resultsTTL(),
		MaxBytes:          c.resultsMaxBytes(),
		MaxMsgsPerSubject: 1,
		Storage:           c.storage(),
		Replicas:          c.Replicas,
		Duplicates:        min(c.DuplicateWindow, c.resultsTTL()),
	}
}

// JobsConfig returns the KV bucket of job states, kept as long as results.
func (c Config) JobsConfig() jetstream.KeyValueConfig {
	c.setDefaults()
	return jetstream.KeyValueConfig{
		Bucket:      schema.BucketJobs,
		Description: "laas-bridge job states: queued, running, succeeded, failed, cancelled",
		History:     1,
		TTL:         c.resultsTTL(),
		Storage:     c.storage(),
		Replicas:    c.Replicas,
	}
}

// ResponsesConfig returns the KV bucket of stored responses (the
// Responses API's store and background mode): one value per response,
// kept as long as job results plus the longest a job may wait
// (schema.MaxRequestTimeout), since a background response's record is
// written when it is queued and its answer is its job's result.
func (c Config) ResponsesConfig() jetstream.KeyValueConfig {
	c.setDefaults()
	return jetstream.KeyValueConfig{
		Bucket:      schema.BucketResponses,
		Description: "laas-bridge stored responses (Responses API): request, conversation, final response",
		History:     1,
		TTL:         c.resultsTTL() + schema.MaxRequestTimeout,
		Storage:     c.storage(),
		Replicas:    c.Replicas,
	}
}
