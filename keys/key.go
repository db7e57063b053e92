package keys

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"slices"
	"time"
)

// SecretPrefix starts every generated key, as LiteLLM's do.
const SecretPrefix = "sk-"

// NewSecret returns a fresh key: "sk-" and 32 bytes from crypto/rand,
// URL-safe base64 without padding.
func NewSecret() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24+)
	return SecretPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// Hash is a secret's stored form and the key's id: hex SHA-256. LiteLLM
// calls it the key's "token".
func Hash(secret string) string {
	sum := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(sum[:])
}

// Key is one virtual key as stored, with LiteLLM's field names. A nil limit
// means none.
type Key struct {
	// Token is Hash of the secret: the key's id, never the secret itself.
	Token string `json:"token"`
	// KeyName is the secret abbreviated for display ("sk-...wxyz").
	KeyName  string `json:"key_name"`
	KeyAlias string `json:"key_alias,omitempty"`
	// Models the key may call; empty means every model.
	Models              []string       `json:"models"`
	RPMLimit            *int64         `json:"rpm_limit"`
	TPMLimit            *int64         `json:"tpm_limit"`
	MaxParallelRequests *int64         `json:"max_parallel_requests"`
	MaxBudget           *float64       `json:"max_budget"`
	BudgetDuration      string         `json:"budget_duration,omitempty"`
	Expires             *time.Time     `json:"expires"`
	Metadata            map[string]any `json:"metadata"`
	TeamID              string         `json:"team_id,omitempty"`
	UserID              string         `json:"user_id,omitempty"`
	Blocked             bool           `json:"blocked"`
	CreatedAt           time.Time      `json:"created_at"`
	UpdatedAt           time.Time      `json:"updated_at"`
}

// Allows says whether the key may call the model alias.
func (k *Key) Allows(model string) bool {
	return len(k.Models) == 0 || slices.Contains(k.Models, model)
}

// Expired says whether the key's expiry has passed at now.
func (k *Key) Expired(now time.Time) bool {
	return k.Expires != nil && !now.Before(*k.Expires)
}

// Caller is who sent a request, as the gateway authenticated it. The zero
// Caller is the admin: the master key, or any caller when the bridge runs
// without auth (--demo, BRIDGE_AUTH=none). A Caller with a Key is a virtual
// key's holder.
type Caller struct {
	// Key is the caller's virtual key; nil for the admin.
	Key *Key
}

// Admin says whether the caller holds the master key (or auth is off): it
// sees and acts on everyone's files, batches and jobs, and no key limit
// applies to it.
func (c Caller) Admin() bool { return c.Key == nil }

// Owner is what a file, batch or job records as its owner: the key's
// Token, "" for the admin.
func (c Caller) Owner() string {
	if c.Key == nil {
		return ""
	}
	return c.Key.Token
}

// Alias names the caller in metrics and logs: the key's alias, else a
// short prefix of its token, "admin" for the admin. Never the secret.
func (c Caller) Alias() string {
	switch {
	case c.Key == nil:
		return "admin"
	case c.Key.KeyAlias != "":
		return c.Key.KeyAlias
	}
	return "key-" + c.Key.Token[:min(12, len(c.Key.Token))]
}

// Sees says whether the caller may see and act on something owned by
// owner: the admin sees everything, a key only its own.
func (c Caller) Sees(owner string) bool {
	return c.Key == nil || owner == c.Key.Token
}
