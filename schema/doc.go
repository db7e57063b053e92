// Package schema holds the wire contracts of laas-bridge: the OpenAI and LaaS
// request and response types, the queue envelope and reply that travel over
// NATS, the subject and header names, the model catalogue, and the one error
// type that maps to OpenAI's error body.
//
// It imports only the standard library, so any Go program that publishes to
// the bridge's subjects can depend on it without pulling in the bridge.
package schema
