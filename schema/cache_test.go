package schema_test

import (
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// TestParseCache: a request's "cache" object (LiteLLM's controls) is read
// by Validate; every malformed one is a 400 invalid_value naming the field.
func TestParseCache(t *testing.T) {
	const head = `{"model":"m","messages":[{"role":"user","content":"hi"}]`
	tests := []struct {
		name  string
		cache string // the "cache" value; "" leaves it out
		want  schema.CacheControl
		err   *schema.Error
	}{
		{name: "absent"},
		{name: "null", cache: `null`},
		{name: "empty", cache: `{}`},
		{name: "no-cache", cache: `{"no-cache": true}`, want: schema.CacheControl{NoCache: true}},
		{name: "no-store", cache: `{"no-store": true}`, want: schema.CacheControl{NoStore: true}},
		{name: "false flags", cache: `{"no-cache": false, "no-store": false}`},
		{name: "ttl", cache: `{"ttl": 600}`, want: schema.CacheControl{TTL: 10 * time.Minute}},
		{name: "everything", cache: `{"no-cache": true, "no-store": true, "ttl": 86400}`, want: schema.CacheControl{NoCache: true, NoStore: true, TTL: 24 * time.Hour}},

		{name: "not an object", cache: `true`, err: invalidValue("cache", `Invalid type for 'cache': expected an object such as {"no-cache": true}, got JSON boolean.`)},
		{name: "an array", cache: `[]`, err: invalidValue("cache", `Invalid type for 'cache': expected an object such as {"no-cache": true}, got JSON array.`)},
		{name: "unknown key", cache: `{"namespace": "x"}`, err: invalidValue("cache.namespace", `'cache' does not support "namespace"; it may hold "no-cache", "no-store" and "ttl".`)},
		{name: "s-maxage unsupported", cache: `{"ttl": 5, "s-maxage": 10}`, err: invalidValue("cache.s-maxage", `'cache' does not support "s-maxage"; it may hold "no-cache", "no-store" and "ttl".`)},
		{name: "no-cache a string", cache: `{"no-cache": "true"}`, err: invalidValue("cache.no-cache", `Invalid type for 'cache.no-cache': expected a boolean, got JSON string.`)},
		{name: "no-store a number", cache: `{"no-store": 1}`, err: invalidValue("cache.no-store", `Invalid type for 'cache.no-store': expected a boolean, got JSON number.`)},
		{name: "ttl zero", cache: `{"ttl": 0}`, err: invalidValue("cache.ttl", `'cache.ttl' must be a whole number of seconds from 1 to 86400, got 0.`)},
		{name: "ttl negative", cache: `{"ttl": -5}`, err: invalidValue("cache.ttl", `'cache.ttl' must be a whole number of seconds from 1 to 86400, got -5.`)},
		{name: "ttl fractional", cache: `{"ttl": 1.5}`, err: invalidValue("cache.ttl", `'cache.ttl' must be a whole number of seconds from 1 to 86400, got 1.5.`)},
		{name: "ttl over a day", cache: `{"ttl": 86401}`, err: invalidValue("cache.ttl", `'cache.ttl' must be a whole number of seconds from 1 to 86400, got 86401.`)},
		{name: "ttl a string", cache: `{"ttl": "600"}`, err: invalidValue("cache.ttl", `'cache.ttl' must be a whole number of seconds from 1 to 86400, got "600".`)},
		{name: "ttl null", cache: `{"ttl": null}`, err: invalidValue("cache.ttl", `'cache.ttl' must be a whole number of seconds from 1 to 86400, got null.`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := head + "}"
			if tt.cache != "" {
				body = head + `,"cache":` + tt.cache + "}"
			}
			req, err := schema.DecodeChatRequest([]byte(body))
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			wantError(t, req.Validate(), tt.err)
			got, err := req.ParseCache()
			wantError(t, err, tt.err)
			if got != tt.want {
				t.Errorf("ParseCache = %+v, want %+v", got, tt.want)
			}
		})
	}
}
