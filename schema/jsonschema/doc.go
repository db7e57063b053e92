// Package jsonschema holds JSON Schema (draft 2020-12) files for the wire
// formats other programs read or write: the queue envelope, a job's result
// and state, and OpenAI's error body. Producers in any language can
// validate against them; the package's tests check them against the Go
// types in package schema, so the two cannot drift apart. Standard library
// only.
package jsonschema

import "embed"

// Files holds the schema files: envelope.json, job-result.json,
// job-state.json, error.json.
//
//go:embed *.json
var Files embed.FS

// BaseURL is the prefix of every schema's $id; a file's $id is BaseURL
// followed by its name.
const BaseURL = "https://github.com/laas-bridge/laas-bridge/schema/jsonschema/"
