// Package keys holds the bridge's virtual keys: LiteLLM-compatible API keys
// that an admin (the master key) generates, each with its own model access,
// rate limits and budget, and the per-key state those limits share across
// every gateway and worker.
//
// A key's secret ("sk-" + 32 random bytes) is shown once, when it is
// generated; only its SHA-256 (Token, also the key's id) is stored, in a
// JetStream key-value bucket that every gateway watches, so a new, changed
// or deleted key takes effect everywhere within the watch's latency.
//
// The package imports schema and nats, never echo: the HTTP handlers live in
// bridge, the limits are enforced by the admission core and the worker.
package keys
