// Package queue provisions the JetStream streams, buckets and consumers
// named in package schema, connects to NATS, and runs the embedded NATS
// server that `laas-bridge serve` uses. Both the gateway and the workers
// call Ensure at start: whichever process comes first creates what is
// missing, the others find it and change only the settings they were
// explicitly given; nothing is deleted to apply a setting.
package queue
