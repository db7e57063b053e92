package keys

import (
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Error codes of virtual keys (the "code" of OpenAI's error body). LiteLLM
// puts the same words in its error's "type".
const (
	// CodeModelAccessDenied: the key may not call the request's model (401).
	CodeModelAccessDenied = "key_model_access_denied"
	// CodeExpired: the key's expiry has passed (401).
	CodeExpired = "expired_key"
	// CodeBlocked: the key is blocked (401).
	CodeBlocked = "key_blocked"
	// CodeAdminOnly: a virtual key called a route only the master key may
	// call (401, as LiteLLM answers).
	CodeAdminOnly = "admin_only"
	// CodeKeyAccessDenied: a virtual key asked about another key (403).
	CodeKeyAccessDenied = "key_access_denied"
	// CodeKeyNotFound: /key/info, /key/update or /key/delete named a key
	// that does not exist (404).
	CodeKeyNotFound = "key_not_found"
)

// ModelAccessDenied is the refusal of a request for a model the key may not
// call: 401 as LiteLLM answers it (LiteLLM's newer versions answer 403),
// naming the models the key may call. The key holder may list them with
// GET /v1/models anyway.
func ModelAccessDenied(k *Key, model string) *schema.Error {
	return &schema.Error{Status: http.StatusUnauthorized, Type: schema.TypeInvalidRequest, Code: CodeModelAccessDenied, Param: "model",
		Message: fmt.Sprintf("This key is not allowed to access model '%s'. It can only access models=[%s].", model, strings.Join(k.Models, ", "))}
}

// Usable refuses a key that is blocked or expired at now (401 in OpenAI's
// shape, with LiteLLM's messages); nil when it may be used.
func (k *Key) Usable(now time.Time) *schema.Error {
	switch {
	case k.Blocked:
		return &schema.Error{Status: http.StatusUnauthorized, Type: schema.TypeInvalidRequest, Code: CodeBlocked,
			Message: "Authentication Error, Key is blocked. An admin can unblock it with POST /key/unblock."}
	case k.Expired(now):
		return &schema.Error{Status: http.StatusUnauthorized, Type: schema.TypeInvalidRequest, Code: CodeExpired,
			Message: fmt.Sprintf("Authentication Error - Expired Key. Key Expiry time %s and current time %s.",
				k.Expires.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))}
	}
	return nil
}

// AdminOnly is the refusal of a virtual key on a route only the master key
// may call (/key/generate, /key/update, ...): 401, as LiteLLM answers.
func AdminOnly(route string) *schema.Error {
	return &schema.Error{Status: http.StatusUnauthorized, Type: schema.TypeInvalidRequest, Code: CodeAdminOnly,
		Message: fmt.Sprintf("Authentication Error, only the master key can call %s; this is a virtual key.", route)}
}

// NotFound is the answer for a key that does not exist (404; param "key"
// or "keys").
func NotFound(param string, n int) *schema.Error {
	msg := "Key not found."
	if n > 1 {
		msg = fmt.Sprintf("%d of the keys were not found; nothing was deleted.", n)
	}
	return &schema.Error{Status: http.StatusNotFound, Type: schema.TypeNotFound, Code: CodeKeyNotFound, Param: param, Message: msg}
}
