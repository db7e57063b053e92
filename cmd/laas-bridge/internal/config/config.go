package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/laas-bridge/laas-bridge/schema"
)

// File is a loaded config.yaml.
type File struct {
	// Catalog holds model_list's models in file order. A model without
	// preset_hash has an empty PresetHash: the caller applies the default
	// preset (LAAS_PRESET_HASH) with Catalog.WithDefaultPreset. A file whose
	// model_list is empty yields an empty, non-nil catalogue.
	Catalog *schema.Catalog
	// AllowPresetOverride is bridge_settings.allow_preset_override: whether a
	// request may name its own preset hash in place of its model's. False
	// when the file does not set it.
	AllowPresetOverride bool
	// Ignored lists the keys present in the file that the bridge does not
	// use, as dotted paths, sorted and without duplicates: a model entry's
	// keys appear as "model_list[].model_info" or
	// "model_list[].litellm_params.api_key", a top-level section's keys as
	// "litellm_settings.set_verbose", and any other top-level key by its
	// name. Values of ignored keys are never read, so an os.environ/ reference
	// in one needs no variable. Nil when every key is used.
	Ignored []string
}

// envPrefix marks a string value that names an environment variable, as in
// LiteLLM: "os.environ/LAAS_PRESET_HASH".
const envPrefix = "os.environ/"

// laasPrefix starts every litellm_params.model the bridge serves.
const laasPrefix = "laas/"

// serviceTypes are the values LaaS accepts for service_type.
var serviceTypes = []string{"OPENAI", "AZURE", "NCP", "UPSTAGE", "GOOGLE", "AWS", "ANTHROPIC"}

// Load reads the file at path and parses it as Parse does, naming the file
// by path in error messages. An error reading the file wraps the os error,
// so errors.Is(err, fs.ErrNotExist) reports a missing file.
func Load(path string, getenv func(string) (string, bool)) (*File, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data, getenv)
}

// Parse parses data, a LiteLLM-format config.yaml, into a File. name is used
// only in error messages. getenv resolves "os.environ/NAME" values of the keys
// the bridge reads (in litellm_params and bridge_settings), reporting whether
// NAME is set; nil means no variable is set.
//
// A model_list key is required; an empty or null model_list yields an empty
// catalogue. Unknown keys anywhere are collected into File.Ignored, not
// rejected. On any problem Parse returns a nil File and every problem found,
// joined with errors.Join in line order, each formatted "name:line: message"
// ("name: message" for the few YAML syntax errors yaml reports without a
// line). Parse never logs and is safe for concurrent use.
func Parse(name string, data []byte, getenv func(string) (string, bool)) (*File, error) {
	if getenv == nil {
		getenv = func(string) (string, bool) { return "", false }
	}
	doc, err := decode(name, data)
	if err != nil {
		return nil, err
	}
	p := &parser{name: name, getenv: getenv, ignored: map[string]bool{}, merged: map[*yaml.Node]*mergeEntry{}}
	f := p.file(doc)
	if len(p.errs) > 0 {
		slices.SortStableFunc(p.errs, func(a, b *lineError) int { return a.line - b.line })
		errs := make([]error, len(p.errs))
		for i, e := range p.errs {
			errs[i] = e
		}
		return nil, errors.Join(errs...)
	}
	return f, nil
}

// decode returns the single YAML document in data, or nil when data holds
// none (an empty or comment-only file).
func decode(name string, data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, yamlError(name, err)
	}
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
		return &doc, nil
	case err != nil:
		return nil, yamlError(name, err)
	default:
		return nil, &lineError{file: name, line: extra.Line, msg: "a second YAML document starts here; the file must hold one"}
	}
}

// yamlError turns yaml's "yaml: line N: msg" into "name:N: msg".
func yamlError(name string, err error) error {
	msg, ok := strings.CutPrefix(err.Error(), "yaml: ")
	if !ok {
		return fmt.Errorf("%s: %w", name, err)
	}
	if rest, ok := strings.CutPrefix(msg, "line "); ok {
		if num, text, ok := strings.Cut(rest, ": "); ok {
			if line, err := strconv.Atoi(num); err == nil {
				return &lineError{file: name, line: line, msg: text}
			}
		}
	}
	return &lineError{file: name, msg: msg}
}

// lineError is one problem in the file: "file:line: msg", or "file: msg"
// when the line is not known.
type lineError struct {
	file string
	line int
	msg  string
}

func (e *lineError) Error() string {
	if e.line <= 0 {
		return e.file + ": " + e.msg
	}
	return e.file + ":" + strconv.Itoa(e.line) + ": " + e.msg
}

// parser walks one document, collecting problems and ignored keys.
type parser struct {
	name    string
	getenv  func(string) (string, bool)
	errs    []*lineError // sorted by line before they are returned
	ignored map[string]bool
	merged  map[*yaml.Node]*mergeEntry
}

func (p *parser) errorf(line int, format string, args ...any) {
	p.errs = append(p.errs, &lineError{file: p.name, line: line, msg: fmt.Sprintf(format, args...)})
}

func (p *parser) ignore(path string) { p.ignored[path] = true }

// file reads the top-level mapping.
func (p *parser) file(doc *yaml.Node) *File {
	f := &File{}
	var top *yaml.Node
	if doc != nil && len(doc.Content) > 0 {
		top = deref(doc.Content[0])
	}
	if top == nil || isNull(top) {
		p.errorf(1, "model_list is missing: the file lists no models")
		return nil
	}
	if top.Kind != yaml.MappingNode {
		p.errorf(top.Line, "the file must be a mapping with a model_list, not %s", describeKind(top))
		return nil
	}
	var models []schema.Model
	seenModelList := false
	for _, kv := range p.pairs(top, "", "model_list", "bridge_settings") {
		switch kv.key.Value {
		case "model_list":
			seenModelList = true
			models = p.modelList(kv.val)
		case "bridge_settings":
			f.AllowPresetOverride = p.bridgeSettings(kv.val)
		default:
			p.ignoreSection(kv)
		}
	}
	if !seenModelList {
		p.errorf(top.Line, "model_list is missing: the file lists no models")
	}
	if len(p.errs) > 0 {
		return nil
	}
	cat, err := schema.NewCatalog(models)
	if err != nil { // aliases were checked above; kept as a guard
		p.errs = append(p.errs, &lineError{file: p.name, msg: err.Error()})
		return nil
	}
	f.Catalog = cat
	if len(p.ignored) > 0 {
		f.Ignored = make([]string, 0, len(p.ignored))
		for k := range p.ignored {
			f.Ignored = append(f.Ignored, k)
		}
		slices.Sort(f.Ignored)
	}
	return f
}

// ignoreSection records an unused top-level key: a section that is a
// non-empty mapping by its keys ("litellm_settings.set_verbose"), anything
// else by its name.
func (p *parser) ignoreSection(kv pair) {
	v := deref(kv.val)
	if v.Kind == yaml.MappingNode {
		if sub := p.pairs(v, kv.key.Value); len(sub) > 0 {
			for _, s := range sub {
				p.ignore(kv.key.Value + "." + s.key.Value)
			}
			return
		}
	}
	p.ignore(kv.key.Value)
}

// modelList reads model_list: a sequence of model entries, or null for none.
func (p *parser) modelList(v *yaml.Node) []schema.Model {
	v = deref(v)
	if isNull(v) {
		return nil
	}
	if v.Kind != yaml.SequenceNode {
		p.errorf(v.Line, "model_list must be a sequence of models, not %s", describeKind(v))
		return nil
	}
	type first struct{ index, line int }
	aliases := map[string]first{}
	models := make([]schema.Model, 0, len(v.Content))
	for i, item := range v.Content {
		m, ok := p.model(item, i)
		if m.Alias != "" {
			if prev, dup := aliases[m.Alias]; dup {
				p.errorf(m.line, "model_list[%d].model_name %q is already used by model_list[%d] (line %d)", i, m.Alias, prev.index, prev.line)
				continue
			}
			aliases[m.Alias] = first{i, m.line}
		}
		if ok {
			models = append(models, m.Model)
		}
	}
	return models
}

// parsedModel is a model and the line of its model_name.
type parsedModel struct {
	schema.Model
	line int
}

// model reads model_list[i]. ok is false when it had a problem (reported);
// Alias is set whenever model_name was valid, so duplicates are still found.
func (p *parser) model(item *yaml.Node, i int) (parsedModel, bool) {
	path := fmt.Sprintf("model_list[%d]", i)
	n := deref(item)
	if n.Kind != yaml.MappingNode {
		p.errorf(n.Line, "%s must be a mapping with model_name and litellm_params, not %s", path, describeKind(n))
		return parsedModel{}, false
	}
	errs := len(p.errs)
	var m parsedModel
	var name, params *pair
	for _, kv := range p.pairs(n, path, "model_name", "litellm_params") {
		switch kv.key.Value {
		case "model_name":
			name = &kv
		case "litellm_params":
			params = &kv
		default:
			p.ignore("model_list[]." + kv.key.Value)
		}
	}
	if name == nil {
		p.errorf(n.Line, "%s.model_name is missing", path)
	} else if s, ok := p.scalar(name.val, path+".model_name", false); ok {
		if s.text == "" {
			p.errorf(s.node.Line, "%s.model_name is empty", path)
		} else {
			m.Alias, m.line = s.text, s.node.Line
		}
	}
	if params == nil {
		p.errorf(n.Line, "%s.litellm_params is missing", path)
	} else {
		p.params(*params, path+".litellm_params", &m.Model)
	}
	return m, len(p.errs) == errs
}

// params reads a model's litellm_params into m.
func (p *parser) params(kv pair, path string, m *schema.Model) {
	v := deref(kv.val)
	if !isNull(v) && v.Kind != yaml.MappingNode {
		p.errorf(v.Line, "%s must be a mapping, not %s", path, describeKind(v))
		return
	}
	var model *pair
	if v.Kind == yaml.MappingNode {
		for _, f := range p.pairs(v, path, "model", "preset_hash", "service_type", "timeout", "rpm") {
			key := path + "." + f.key.Value
			switch f.key.Value {
			case "model":
				model = &f
			case "preset_hash":
				if s, ok := p.scalar(f.val, key, true); ok {
					m.PresetHash = s.text
				}
			case "service_type":
				m.ServiceType = p.serviceType(f.val, key)
			case "timeout":
				m.Timeout = p.timeout(f.val, key)
			case "rpm":
				m.RPM = p.rpm(f.val, key)
			default:
				p.ignore("model_list[].litellm_params." + f.key.Value)
			}
		}
	}
	if model == nil {
		p.errorf(kv.key.Line, "%s.model is missing", path)
		return
	}
	m.LaaSModel = p.laasModel(model.val, path+".model")
}

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
				p.errorf(s.node.Line, "%s %s must be a whole number of requests per minute", path, s)
			}
			return 0
		}
	default:
		if _, err := strconv.ParseInt(s.text, 10, 64); errors.Is(err, strconv.ErrRange) {
			// yaml reads an integer too large for int64 as a float.
			p.errorf(s.node.Line, "%s %s is too large", path, s)
			return 0
		}
		p.errorf(s.node.Line, "%s %s must be a whole number of requests per minute", path, s)
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

// pair is one key and value of a mapping.
type pair struct{ key, val *yaml.Node }

// mergeEntry is the expansion of a mapping merged in with <<; done is false
// while it is being expanded.
type mergeEntry struct {
	pairs []pair
	done  bool
}

// pairs returns mapping m's entries in order, followed by those merged in
// with YAML merge keys (<<) that m does not set itself. A key in known that
// m sets twice is reported and its later settings are dropped; other repeated
// keys are passed on, as PyYAML accepts them. A non-string key is reported
// and skipped.
func (p *parser) pairs(m *yaml.Node, path string, known ...string) []pair {
	var out []pair
	firstLine := map[string]int{}
	var merges []*yaml.Node
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if isMerge(k) {
			merges = append(merges, v)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			p.errorf(k.Line, "%s has a key that is %s; keys must be names", pathOrTop(path), describeKind(k))
			continue
		}
		line, dup := firstLine[k.Value]
		if dup && slices.Contains(known, k.Value) {
			p.errorf(k.Line, "%s is set twice (first at line %d)", joinPath(path, k.Value), line)
			continue
		}
		if !dup {
			firstLine[k.Value] = k.Line
		}
		out = append(out, pair{k, v})
	}
	for _, mv := range merges {
		src := deref(mv)
		sources := []*yaml.Node{src}
		if src.Kind == yaml.SequenceNode {
			sources = sources[:0]
			for _, s := range src.Content {
				sources = append(sources, deref(s))
			}
		}
		for _, s := range sources {
			if s.Kind != yaml.MappingNode {
				p.errorf(s.Line, "%s merges (<<) %s; only mappings can be merged", pathOrTop(path), describeKind(s))
				continue
			}
			for _, kv := range p.mergeSource(s, path) {
				if _, set := firstLine[kv.key.Value]; !set {
					firstLine[kv.key.Value] = kv.key.Line
					out = append(out, kv)
				}
			}
		}
	}
	return out
}

// mergeSource returns the pairs of src, a mapping merged in with <<. Each
// mapping is expanded once however often it is merged, so nested merges
// cannot blow up, and a mapping that merges itself is reported.
func (p *parser) mergeSource(src *yaml.Node, path string) []pair {
	if e, ok := p.merged[src]; ok {
		if !e.done {
			p.errorf(src.Line, "%s merges (<<) a mapping into itself", pathOrTop(path))
		}
		return e.pairs
	}
	p.merged[src] = &mergeEntry{}
	ps := p.pairs(src, path)
	p.merged[src] = &mergeEntry{pairs: ps, done: true}
	return ps
}

// isMerge reports whether k is the YAML merge key "<<".
func isMerge(k *yaml.Node) bool {
	return k.Kind == yaml.ScalarNode && k.Value == "<<" && (k.Tag == "" || k.Tag == "!" || k.ShortTag() == "!!merge")
}

// deref follows an alias (*name) to its anchored node.
func deref(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describeKind names n's kind for a message: "a mapping", "an integer", ...
func describeKind(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a sequence"
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return "null"
		case "!!bool":
			return "a boolean"
		case "!!int":
			return "an integer"
		case "!!float":
			return "a number"
		}
		return "a string"
	}
	return "an alias"
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func pathOrTop(path string) string {
	if path == "" {
		return "the top level"
	}
	return path
}
