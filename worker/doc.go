// Package worker takes chat requests off the JetStream work queue, runs them
// on LaaS and publishes each answer to the reply subject its gateway named.
//
// A Pool binds to the shared durable pull consumer; any number of pools, in
// any number of processes, share the work. KVCap caps the LaaS calls in
// flight over every process and both lanes (the project's and each
// model's cap); the consumers' MaxAckPending only bounds the jobs each
// lane hands out. A job is acknowledged only after its
// answer is published, so a worker that dies mid-call leaves the job to be
// redelivered.
//
// A delivery runs through a chain of small steps (handler.go lists them in
// order, each in its own step_*.go file): decode, job state, cancelled,
// deadline, kept answer, large body, prepare, call scope, concurrency
// slot, rate limit, and
// the LaaS call with its retry mapping. KVLimiter is the rate limiter every
// worker process shares; WithMetrics gives a pool its Prometheus metrics
// (metrics.go). The LaaS client and translation are package laas.
package worker
