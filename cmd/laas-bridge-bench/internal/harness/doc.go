// Package harness runs laas-bridge-bench's measurements: it starts the
// processes under test (a LaaS mock, `laas-bridge serve`, gateway and
// workers, a NATS server, the baseline proxy), each as its own process
// with its log in a file, drives load at them with package load (and
// package soak in the soak mode), prints the tables, and stops them.
//
// The laas-bridge processes run from Config.BridgeBin, or from a binary the
// harness builds with `go build` from the module it is run in; the baseline
// proxy runs from Config.Self (`Self baseline-proxy`), the soak mode's NATS
// server from Config.NATSBin or a nats-server it builds the same way.
package harness
