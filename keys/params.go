package keys

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Field is one setting of a Params: absent (Set false: left as it is),
// null (Set, Value nil: removed) or a value.
type Field[T any] struct {
	Set   bool
	Value *T
}

// Of is a Field set to v.
func Of[T any](v T) Field[T] { return Field[T]{Set: true, Value: &v} }

// Params are the settings of a /key/generate or /key/update request, with
// LiteLLM's field names. A field left out keeps its value (generate: none);
// null removes it, as in LiteLLM's /key/update.
type Params struct {
	KeyAlias            Field[string]
	Models              Field[[]string]
	RPMLimit            Field[int64]
	TPMLimit            Field[int64]
	MaxParallelRequests Field[int64]
	MaxBudget           Field[float64]
	BudgetDuration      Field[string]
	// Duration sets the expiry to now + Duration; null removes it.
	Duration Field[string]
	Metadata Field[map[string]any]
	TeamID   Field[string]
	UserID   Field[string]
	Blocked  Field[bool]
}

// AllModels, in a key's models, means every model, as in LiteLLM; it is
// stored as the empty list.
const AllModels = "all-proxy-models"

// MaxAliasLen bounds key_alias, team_id and user_id.
const MaxAliasLen = 255

// Request is the body of /key/generate or /key/update: Key (LiteLLM's
// "key": on generate a chosen secret, "" for a random one; on update the
// key to change, its secret or token) and the settings.
type Request struct {
	Key string
	Params
}

// DecodeRequest reads a /key/generate or /key/update body. A malformed
// body or field, and a field this bridge does not know (unless null), is a
// 400 naming the field; so is a value Params.Validate refuses.
func DecodeRequest(body []byte) (Request, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(body, &raw); err != nil || raw == nil {
		return Request{}, schema.Invalid("", schema.CodeInvalidJSON, "The body must be a JSON object.")
	}
	var r Request
	fields := map[string]func(json.RawMessage) error{
		"key": func(v json.RawMessage) error {
			var s *string
			err := json.Unmarshal(v, &s)
			if s != nil {
				r.Key = *s
			}
			return err
		},
		"key_alias":             decodeField(&r.KeyAlias),
		"models":                decodeField(&r.Models),
		"rpm_limit":             decodeField(&r.RPMLimit),
		"tpm_limit":             decodeField(&r.TPMLimit),
		"max_parallel_requests": decodeField(&r.MaxParallelRequests),
		"max_budget":            decodeField(&r.MaxBudget),
		"budget_duration":       decodeField(&r.BudgetDuration),
		"duration":              decodeField(&r.Duration),
		"metadata":              decodeField(&r.Metadata),
		"team_id":               decodeField(&r.TeamID),
		"user_id":               decodeField(&r.UserID),
		"blocked":               decodeField(&r.Blocked),
	}
	for _, name := range slices.Sorted(maps.Keys(raw)) {
		v := raw[name]
		decode, ok := fields[name]
		if !ok {
			if bytes.Equal(bytes.TrimSpace(v), []byte("null")) {
				continue // a LiteLLM client's unset field
			}
			return Request{}, schema.Invalid(name, schema.CodeUnsupported,
				"'%s' is not supported by this bridge's keys; leave it out (see docs/keys.md for the fields it takes).", name)
		}
		if err := decode(v); err != nil {
			return Request{}, schema.Invalid(name, schema.CodeInvalidValue, "'%s' has the wrong type: %s.", name, typeHint(name))
		}
	}
	return r, r.Validate()
}

func decodeField[T any](f *Field[T]) func(json.RawMessage) error {
	return func(v json.RawMessage) error {
		f.Set = true
		return json.Unmarshal(v, &f.Value)
	}
}

func typeHint(name string) string {
	switch name {
	case "models":
		return "a list of model names"
	case "rpm_limit", "tpm_limit", "max_parallel_requests":
		return "a whole number or null"
	case "max_budget":
		return "a number or null"
	case "metadata":
		return "an object or null"
	case "blocked":
		return "true or false"
	}
	return "a string or null"
}

// Validate refuses negative limits and budgets, unreadable durations, an
// empty or overlong name, and an empty model name, each a 400 naming its
// field. It does not know the model catalogue: the caller checks the
// names.
func (p Params) Validate() error {
	for _, f := range []struct {
		name string
		v    *int64
	}{{"rpm_limit", p.RPMLimit.Value}, {"tpm_limit", p.TPMLimit.Value}, {"max_parallel_requests", p.MaxParallelRequests.Value}} {
		if f.v != nil && *f.v < 0 {
			return schema.Invalid(f.name, schema.CodeInvalidValue, "'%s' must not be negative, got %d.", f.name, *f.v)
		}
	}
	if b := p.MaxBudget.Value; b != nil && (*b < 0 || math.IsInf(*b, 0) || math.IsNaN(*b)) {
		return schema.Invalid("max_budget", schema.CodeInvalidValue, "'max_budget' must be a number of at least 0, got %v.", *b)
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"duration", p.Duration.Value}, {"budget_duration", p.BudgetDuration.Value}} {
		if f.v == nil || *f.v == "" {
			continue
		}
		if _, err := ParseDuration(*f.v); err != nil {
			return schema.Invalid(f.name, schema.CodeInvalidValue, "'%s': %v.", f.name, err)
		}
	}
	for _, f := range []struct {
		name string
		v    *string
	}{{"key_alias", p.KeyAlias.Value}, {"team_id", p.TeamID.Value}, {"user_id", p.UserID.Value}} {
		if f.v != nil && (len(*f.v) > MaxAliasLen || strings.ContainsFunc(*f.v, isControl)) {
			return schema.Invalid(f.name, schema.CodeInvalidValue, "'%s' must be at most %d characters, without control characters.", f.name, MaxAliasLen)
		}
	}
	if p.Models.Value != nil {
		for i, m := range *p.Models.Value {
			if strings.TrimSpace(m) == "" {
				return schema.Invalid(fmt.Sprintf("models[%d]", i), schema.CodeInvalidValue, "A model name must not be empty.")
			}
		}
	}
	return nil
}

func isControl(r rune) bool { return r < 0x20 || r == 0x7f }

// apply sets p's fields on k; now is when a duration starts.
func (p Params) apply(k *Key, now time.Time) {
	setString(&k.KeyAlias, p.KeyAlias)
	setString(&k.TeamID, p.TeamID)
	setString(&k.UserID, p.UserID)
	setString(&k.BudgetDuration, p.BudgetDuration)
	if p.Models.Set {
		k.Models = []string{}
		if p.Models.Value != nil && !slices.Contains(*p.Models.Value, AllModels) {
			k.Models = slices.Clone(*p.Models.Value)
		}
	}
	setPtr(&k.RPMLimit, p.RPMLimit)
	setPtr(&k.TPMLimit, p.TPMLimit)
	setPtr(&k.MaxParallelRequests, p.MaxParallelRequests)
	setPtr(&k.MaxBudget, p.MaxBudget)
	if p.Metadata.Set {
		k.Metadata = nil
		if p.Metadata.Value != nil {
			k.Metadata = *p.Metadata.Value
		}
	}
	if p.Blocked.Set {
		k.Blocked = p.Blocked.Value != nil && *p.Blocked.Value
	}
	if p.Duration.Set {
		k.Expires = nil
		if p.Duration.Value != nil && *p.Duration.Value != "" {
			d, _ := ParseDuration(*p.Duration.Value) // Validate checked it
			at := d.After(now).UTC()
			k.Expires = &at
		}
	}
}

func setString(dst *string, f Field[string]) {
	if f.Set {
		*dst = ""
		if f.Value != nil {
			*dst = *f.Value
		}
	}
}

func setPtr[T any](dst **T, f Field[T]) {
	if f.Set {
		*dst = f.Value
	}
}
