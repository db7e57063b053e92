package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

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
