// Package config loads the bridge's model configuration from a LiteLLM-format
// config.yaml into a *schema.Catalog.
//
// The file is the one users of the earlier LiteLLM custom handler already
// have: a model_list whose entries map a public model_name to
// litellm_params.model "laas/<LaaS model>", plus LiteLLM's own sections
// (litellm_settings, general_settings, router_settings, ...). Such a file loads
// unchanged. The bridge reads, per model, litellm_params model, preset_hash,
// service_type, timeout, rpm and max_parallel_requests, and its own optional bridge_settings section;
// every other key is reported in File.Ignored rather than rejected, so the
// caller can tell the operator, in one log line, which settings do not take
// effect.
//
// Every problem found is reported at once (errors.Join), each as
// "file:line: message". Messages name keys and, for literal values, the value;
// a value that came from an os.environ/NAME reference is named by its variable,
// never shown.
//
// The package does no I/O beyond reading the named file, reads the process
// environment only through the getenv function it is given, and never logs.
package config
