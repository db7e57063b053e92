package config

import (
	"slices"

	"go.yaml.in/yaml/v3"
)

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
