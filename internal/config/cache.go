package config

import (
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/laas-bridge/laas-bridge/schema"
)

// cache reads litellm_params.cache, the model's opt-in to the exact
// response cache: a mapping with ttl, a number of seconds or a duration
// such as "1h", whole seconds from 1s to schema.MaxCacheTTL. Null is no
// cache. It returns the TTL, or 0 after a reported problem.
func (p *parser) cache(kv pair, path string) time.Duration {
	v := deref(kv.val)
	if isNull(v) {
		return 0
	}
	if v.Kind != yaml.MappingNode {
		p.errorf(v.Line, "%s must be a mapping such as {ttl: 1h}, not %s", path, describeKind(v))
		return 0
	}
	var ttl *pair
	for _, f := range p.pairs(v, path, "ttl") {
		switch f.key.Value {
		case "ttl":
			ttl = &f
		default:
			p.errorf(f.key.Line, "%s.%s is not a cache setting; the cache has only ttl", path, f.key.Value)
		}
	}
	if ttl == nil {
		p.errorf(kv.key.Line, "%s.ttl is missing: how long an answer is kept, such as 1h", path)
		return 0
	}
	errs := len(p.errs)
	d := p.timeout(ttl.val, path+".ttl")
	if len(p.errs) > errs || d == 0 {
		if len(p.errs) == errs { // empty, or empty from the environment
			p.errorf(deref(ttl.val).Line, "%s.ttl is empty: how long an answer is kept, such as 1h", path)
		}
		return 0
	}
	if s, _ := p.scalar(ttl.val, path+".ttl", true); d%time.Second != 0 || d > schema.MaxCacheTTL {
		p.errorf(s.node.Line, "%s.ttl %s must be whole seconds from 1s to %s", path, s, "24h")
		return 0
	}
	return d
}
