package schema

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"time"
)

// BucketCache is the KV bucket of the exact response cache: the
// completions of models with a cache TTL in config.yaml, keyed by the hex
// SHA-256 of what decides the answer (see the gateway's cache), each entry
// with its own TTL. Every gateway reads and writes it.
const BucketCache = "LAAS_CACHE"

// MaxCacheTTL bounds a cache entry's TTL: a model's cache ttl, and a
// request's cache.ttl; the bucket's max age is the same.
const MaxCacheTTL = 24 * time.Hour

// CacheControl is a request's "cache" object, LiteLLM's per-request cache
// controls: {"no-cache": true} does not read the cache (the answer is
// still stored), {"no-store": true} does not store the answer, and
// {"ttl": seconds} is how long the stored answer is kept. They only refine
// the cache of a model that has one in config.yaml.
type CacheControl struct {
	NoCache bool          // do not answer from the cache
	NoStore bool          // do not store the answer
	TTL     time.Duration // the stored entry's TTL; 0: the model's
}

// cacheKeys are the keys a request's "cache" object may hold.
var cacheKeys = []string{"no-cache", "no-store", "ttl"}

// ParseCache reads the request's "cache" object; absent or null is the
// zero CacheControl. Validate has refused a bad one already.
func (r *ChatCompletionRequest) ParseCache() (CacheControl, error) {
	raw := bytes.TrimSpace(r.Cache)
	if len(raw) == 0 || string(raw) == "null" {
		return CacheControl{}, nil
	}
	if raw[0] != '{' {
		return CacheControl{}, Invalid("cache", CodeInvalidValue,
			"Invalid type for 'cache': expected an object such as {\"no-cache\": true}, got JSON %s.", jsonKind(raw[0]))
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return CacheControl{}, Invalid("cache", CodeInvalidValue, "'cache' could not be parsed: %s.", err.Error())
	}
	var cc CacheControl
	for _, name := range sortedKeys(fields) {
		v := bytes.TrimSpace(fields[name])
		param := "cache." + name
		switch name {
		case "no-cache", "no-store":
			var b bool
			if len(v) == 0 || (v[0] != 't' && v[0] != 'f') || json.Unmarshal(v, &b) != nil {
				return CacheControl{}, Invalid(param, CodeInvalidValue, "Invalid type for '%s': expected a boolean, got JSON %s.", param, jsonKind(v[0]))
			}
			if name == "no-cache" {
				cc.NoCache = b
			} else {
				cc.NoStore = b
			}
		case "ttl":
			var secs int64
			if len(v) == 0 || v[0] == '"' || json.Unmarshal(v, &secs) != nil || secs < 1 || secs > int64(MaxCacheTTL/time.Second) {
				return CacheControl{}, Invalid(param, CodeInvalidValue,
					"'cache.ttl' must be a whole number of seconds from 1 to %d, got %s.", int64(MaxCacheTTL/time.Second), v)
			}
			cc.TTL = time.Duration(secs) * time.Second
		default:
			return CacheControl{}, Invalid(param, CodeInvalidValue,
				"'cache' does not support %q; it may hold %s.", name, quotedList(cacheKeys))
		}
	}
	return cc, nil
}

// validateCache refuses a "cache" object ParseCache cannot read.
func (r *ChatCompletionRequest) validateCache() error {
	_, err := r.ParseCache()
	return err
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func quotedList(names []string) string {
	out := ""
	for i, n := range names {
		switch {
		case i == 0:
		case i == len(names)-1:
			out += " and "
		default:
			out += ", "
		}
		out += fmt.Sprintf("%q", n)
	}
	return out
}
