// Package bridge is laas-bridge's HTTP front end: echo handlers that speak
// OpenAI's API, publish each chat request to the JetStream work queue, and
// hand the worker's answer back to the waiting caller.
//
// Answers come back on core NATS to one subscription per gateway instance
// (a wildcard on the instance's reply prefix) and are matched to callers by
// request id in a map; see correlator.go. Every error is written once, by
// the HTTP error handler, in OpenAI's error format. With Config.Metrics set,
// the gateway keeps Prometheus metrics and serves GET /metrics; see
// metrics.go. Serve also answers chat requests over NATS request/reply, as
// a nats.go/micro service; see micro.go.
package bridge
