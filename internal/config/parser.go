package config

import (
	"fmt"
	"math"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"

	"github.com/laas-bridge/laas-bridge/schema"
)

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
	for _, kv := range p.pairs(n, path, "model_name", "litellm_params", "model_info") {
		switch kv.key.Value {
		case "model_name":
			name = &kv
		case "litellm_params":
			params = &kv
		case "model_info":
			p.modelInfo(kv, path+".model_info", &m.Model)
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
		for _, f := range p.pairs(v, path, "model", "preset_hash", "service_type", "timeout", "rpm", "max_parallel_requests", "cache") {
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
			case "max_parallel_requests":
				m.MaxParallelRequests = p.maxParallel(f.val, key)
			case "cache":
				m.CacheTTL = p.cache(f, key)
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

// modelInfo reads a model's model_info: its prices per token, for
// virtual keys' spend. Its other keys (LiteLLM's) are ignored.
func (p *parser) modelInfo(kv pair, path string, m *schema.Model) {
	v := deref(kv.val)
	if isNull(v) {
		return
	}
	if v.Kind != yaml.MappingNode {
		p.errorf(v.Line, "%s must be a mapping, not %s", path, describeKind(v))
		return
	}
	for _, f := range p.pairs(v, path, "input_cost_per_token", "output_cost_per_token") {
		switch f.key.Value {
		case "input_cost_per_token":
			m.InputCostPerToken = p.price(f.val, path+"."+f.key.Value)
		case "output_cost_per_token":
			m.OutputCostPerToken = p.price(f.val, path+"."+f.key.Value)
		default:
			p.ignore("model_list[].model_info." + f.key.Value)
		}
	}
}

// price reads a cost per token: a number >= 0.
func (p *parser) price(v *yaml.Node, path string) float64 {
	s, ok := p.scalar(v, path, true)
	if !ok || s.text == "" {
		return 0
	}
	f, err := strconv.ParseFloat(s.text, 64)
	if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) {
		p.errorf(s.node.Line, "%s %s must be a number of at least 0, such as 0.000003", path, s)
		return 0
	}
	return f
}
