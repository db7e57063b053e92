// Package batchcli is the logic of `laas-bridge batch`: it submits OpenAI
// batches (JSONL files of /v1/chat/completions requests), follows them with
// a progress display, and writes their output and error files.
//
// A Client is the Batch API as the CLI uses it. HTTPClient reaches a
// bridge's OpenAI Batch API with the official openai-go client, so the CLI
// exercises exactly what SDK users call; NATSClient works on the Batch
// API's JetStream state directly, for hosts that reach NATS but no gateway.
//
// The package parses no flags and reads no environment: the command fills
// Options and chooses the Client.
package batchcli
