package schema

import "log/slog"

// Secret is a string that must never be printed: the LaaS API key, the
// project code, the master key. Its String, GoString, LogValue and JSON forms
// are redacted; call Reveal where the value itself is needed.
type Secret string

const redacted = "[redacted]"

// Reveal returns the secret's value.
func (s Secret) Reveal() string { return string(s) }

// String redacts.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return redacted
}

// GoString redacts.
func (s Secret) GoString() string { return s.String() }

// LogValue redacts.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// MarshalText redacts, so the value never reaches JSON or YAML output.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
