// Package load drives HTTP load at a target and summarises what it saw:
// fixed-rate (open-loop) load whose latency is measured from each request's
// intended send time, so a stalled target cannot hide its stall (no
// coordinated omission); closed-loop load from a fixed number of callers;
// and one burst of many callers at once. It also reads a process's memory
// from /proc and prints the bench's tables. It knows nothing of the bridge:
// laas-bridge-bench's harness starts the processes and chooses the targets.
package load
