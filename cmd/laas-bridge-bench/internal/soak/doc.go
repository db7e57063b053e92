// Package soak drives laas-bridge-bench's soak mode: mixed traffic at a
// steady rate against a gateway (chat completions, streamed completions,
// async jobs long-polled to their end, callers that hang up mid-request,
// and a Batch API batch now and then), a ledger that checks every answer
// against the request it belongs to, and a sampler of each process's
// resident memory and goroutines over time.
//
// Every request carries a text of its own that the LaaS mock echoes
// ("mock[<hash>]: <text>"), so the ledger can tell an answer that is the
// caller's own from one that is another caller's, and count how often
// each answer was delivered. It knows the bridge's HTTP API but not how
// the processes were started: laas-bridge-bench's harness starts them,
// restarts workers and prints the report.
package soak
