// Package baseline is the yardstick of laas-bridge-bench: a plain HTTP
// proxy that translates an OpenAI chat request to LaaS and back with the
// workers' own translation and the same LaaS client, with no queue in
// between. It exists to be measured against the bridge.
package baseline
