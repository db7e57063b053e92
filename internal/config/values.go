package config

import (
	"errors"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// laasModel reads litellm_params.model, "laas/<LaaS model name>".
func (p *parser) laasModel(v *yaml.Node, path string) string {
	s, ok := p.scalar(v, path, true)
	if !ok {
		return ""
	}
	if s.text == "" {
		p.errorf(s.node.Line, "%s%s is empty", path, s.from())
		return ""
	}
	name, ok := strings.CutPrefix(s.text, laasPrefix)
	if !ok {
		p.errorf(s.node.Line, "%s %s must start with %q", path, s, laasPrefix)
		return ""
	}
	if name == "" {
		p.errorf(s.node.Line, "%s %s names no LaaS model after %q", path, s, laasPrefix)
		return ""
	}
	return name
}

// serviceType reads litellm_params.service_type, case-insensitively.
func (p *parser) serviceType(v *yaml.Node, path string) string {
	s, ok := p.scalar(v, path, true)
	if !ok || s.text == "" {
		return ""
	}
	upper := strings.ToUpper(s.text)
	if !slices.Contains(serviceTypes, upper) {
		p.errorf(s.node.Line, "%s %s is not one of %s", path, s, strings.Join(serviceTypes, ", "))
		return ""
	}
	return upper
}

// timeout reads litellm_params.timeout: seconds (integer or decimal) or a Go
// duration such as "90s", greater than zero.
func (p *parser) timeout(v *yaml.Node, path string) time.Duration {
	s, ok := p.scalar(v, path, true)
	if !ok || s.text == "" {
		return 0
	}
	var d time.Duration
	var secs float64
	tag := s.tag()
	switch {
	case tag == "!!int" || tag == "!!float":
		if err := s.node.Decode(&secs); err != nil {
			p.errorf(s.node.Line, "%s %s is not a number of seconds", path, s)
			return 0
		}
	case tag == "!!str":
		var err error
		if secs, err = strconv.ParseFloat(s.text, 64); err != nil {
			if d, err = time.ParseDuration(s.text); err != nil {
				p.errorf(s.node.Line, "%s %s is neither a number of seconds nor a duration such as \"90s\"", path, s)
				return 0
			}
			secs = d.Seconds()
		}
	default:
		p.errorf(s.node.Line, "%s %s must be a number of seconds or a duration such as \"90s\"", path, s)
		return 0
	}
	if d == 0 {
		switch {
		case math.IsNaN(secs):
			// Fall through to the range check below.
		case secs >= math.MaxInt64/float64(time.Second):
			p.errorf(s.node.Line, "%s %s is too long", path, s)
			return 0
		default:
			d = time.Duration(secs * float64(time.Second))
		}
	}
	if d <= 0 {
		p.errorf(s.node.Line, "%s %s must be greater than zero", path, s)
		return 0
	}
	return d
}

// rpm reads litellm_params.rpm: a whole number of requests per minute, >= 0.
func (p *parser) rpm(v *yaml.Node, path string) int {
	return p.count(v, path, "requests per minute")
}

// maxParallel reads litellm_params.max_parallel_requests: a whole number
// of LaaS calls in flight at once, >= 0 (0: no cap).
func (p *parser) maxParallel(v *yaml.Node, path string) int {
	return p.count(v, path, "requests in flight")
}

// count reads a whole number >= 0 of what (for the error).
func (p *parser) count(v *yaml.Node, path, what string) int {
	s, ok := p.scalar(v, path, true)
	if !ok || s.text == "" {
		return 0
	}
	var n int
	switch s.tag() {
	case "!!int":
		if err := s.node.Decode(&n); err != nil {
			p.errorf(s.node.Line, "%s %s is too large", path, s)
			return 0
		}
	case "!!str":
		var err error
		if n, err = strconv.Atoi(s.text); err != nil {
			if errors.Is(err, strconv.ErrRange) {
				p.errorf(s.node.Line, "%s %s is too large", path, s)
			} else {
				p.errorf(s.node.Line, "%s %s must be a whole number of %s", path, s, what)
			}
			return 0
		}
	default:
		if _, err := strconv.ParseInt(s.text, 10, 64); errors.Is(err, strconv.ErrRange) {
			// yaml reads an integer too large for int64 as a float.
			p.errorf(s.node.Line, "%s %s is too large", path, s)
			return 0
		}
		p.errorf(s.node.Line, "%s %s must be a whole number of %s", path, s, what)
		return 0
	}
	if n < 0 {
		p.errorf(s.node.Line, "%s %s must not be negative", path, s)
		return 0
	}
	return n
}

// bridgeSettings reads the bridge's own section and returns
// allow_preset_override.
func (p *parser) bridgeSettings(v *yaml.Node) (allowPresetOverride bool) {
	v = deref(v)
	if isNull(v) {
		return false
	}
	if v.Kind != yaml.MappingNode {
		p.errorf(v.Line, "bridge_settings must be a mapping, not %s", describeKind(v))
		return false
	}
	for _, kv := range p.pairs(v, "bridge_settings", "allow_preset_override") {
		switch kv.key.Value {
		case "allow_preset_override":
			allowPresetOverride = p.boolean(kv.val, "bridge_settings.allow_preset_override")
		default:
			p.ignore("bridge_settings." + kv.key.Value)
		}
	}
	return allowPresetOverride
}

// boolean reads true or false, in any case. YAML 1.1's yes/no and on/off,
// which LiteLLM users' PyYAML reads as booleans, and 1/0, common in
// environment variables, are accepted too. Unset is false.
func (p *parser) boolean(v *yaml.Node, path string) bool {
	s, ok := p.scalar(v, path, true)
	if !ok || s.text == "" {
		return false
	}
	switch strings.ToLower(s.text) {
	case "true", "yes", "on", "1":
		return true
	case "false", "no", "off", "0":
		return false
	}
	p.errorf(s.node.Line, "%s %s must be true or false", path, s)
	return false
}

// scalarValue is a scalar's text after os.environ/ resolution.
type scalarValue struct {
	node *yaml.Node
	text string
	// env is the variable the text came from, or "" for a literal.
	env string
}

// tag is the value's YAML tag; a value from the environment is a string.
func (s scalarValue) tag() string {
	if s.env != "" {
		return "!!str"
	}
	return s.node.ShortTag()
}

// String shows the value in a message: a literal as written (quoted when a
// string), a value from the environment by its variable only.
func (s scalarValue) String() string {
	if s.env != "" {
		return "from " + envPrefix + s.env
	}
	if s.tag() == "!!str" {
		return strconv.Quote(s.text)
	}
	return s.text
}

// from is " from os.environ/NAME" for a value from the environment, else "".
func (s scalarValue) from() string {
	if s.env != "" {
		return " " + s.String()
	}
	return ""
}

// scalar reads v at path as a scalar, resolving "os.environ/NAME" when env
// is set. Null reads as "" (unset). ok is false after a reported problem.
func (p *parser) scalar(v *yaml.Node, path string, env bool) (scalarValue, bool) {
	v = deref(v)
	if v.Kind != yaml.ScalarNode {
		p.errorf(v.Line, "%s must be a single value, not %s", path, describeKind(v))
		return scalarValue{}, false
	}
	s := scalarValue{node: v, text: v.Value}
	if isNull(v) {
		s.text = ""
		return s, true
	}
	if !env || v.ShortTag() != "!!str" {
		return s, true
	}
	name, ok := strings.CutPrefix(v.Value, envPrefix)
	if !ok {
		return s, true
	}
	if name == "" {
		p.errorf(v.Line, "%s is %q, which names no environment variable", path, envPrefix)
		return scalarValue{}, false
	}
	val, set := p.getenv(name)
	if !set {
		p.errorf(v.Line, "%s names %s%s, which is not set", path, envPrefix, name)
		return scalarValue{}, false
	}
	s.text, s.env = val, name
	return s, true
}
