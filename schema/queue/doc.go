// Package queue provisions the JetStream stream and consumer named in
// package schema, connects to NATS, and runs the embedded NATS server that
// `laas-bridge serve` uses. Both the gateway and the workers call Ensure at
// start; it is idempotent, so whichever process comes first creates the
// stream and the others find it.
package queue
