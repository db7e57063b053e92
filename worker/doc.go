// Package worker takes chat requests off the JetStream work queue, runs them
// on LaaS and publishes each answer to the reply subject its gateway named.
//
// A Pool binds to the shared durable pull consumer; any number of pools, in
// any number of processes, share the work. The consumer's MaxAckPending is
// the global cap on jobs in flight. A job is acknowledged only after its
// answer is published, so a worker that dies mid-call leaves the job to be
// redelivered. The LaaS client, the OpenAI<->LaaS translation and the LaaS
// mock (package laasmock) live here too. WithMetrics gives a pool its
// Prometheus metrics; see metrics.go.
package worker
