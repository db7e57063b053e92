package bridge

// Virtual keys over HTTP, as LiteLLM's proxy serves them: POST
// /key/generate, GET /key/info?key=, POST /key/update, POST /key/delete,
// GET /key/list, POST /key/block and /key/unblock. Only the master key may
// call them, except /key/info about the caller's own key. A key is named by
// its secret ("sk-...") or its token (the secret's SHA-256); answers name
// it by its token only, never the secret, which /key/generate shows once.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

// KeyUsage reads what a key has used in its budget window, for /key/info.
type KeyUsage interface {
	Usage(ctx context.Context, token string) (keys.Usage, error)
}

// keyAdmin is what /key/* needs of Config.Keys beyond Lookup; keys.Store
// has it.
type keyAdmin interface {
	KeyLookup
	Generate(ctx context.Context, chosen string, p keys.Params) (string, *keys.Key, error)
	Update(ctx context.Context, token string, p keys.Params) (*keys.Key, error)
	Delete(ctx context.Context, tokens []string) (missing []string, err error)
	Get(ctx context.Context, token string) (*keys.Key, error)
	List() []*keys.Key
}

var _ keyAdmin = (*keys.Store)(nil)

// maxKeyBody bounds a /key/* request body.
const maxKeyBody = 1 << 20

// keyRoutes registers /key/* when Config.Keys can manage keys.
func (g *Gateway) keyRoutes(e *echo.Echo) {
	if _, ok := g.cfg.Keys.(keyAdmin); !ok {
		return
	}
	e.POST("/key/generate", g.generateKey, g.authenticate, adminOnly)
	e.GET("/key/info", g.keyInfo, g.authenticate)
	e.POST("/key/update", g.updateKey, g.authenticate, adminOnly)
	e.POST("/key/delete", g.deleteKeys, g.authenticate, adminOnly)
	e.GET("/key/list", g.listKeys, g.authenticate, adminOnly)
	e.POST("/key/block", g.blockKey(true), g.authenticate, adminOnly)
	e.POST("/key/unblock", g.blockKey(false), g.authenticate, adminOnly)
}

func (g *Gateway) keyStore() keyAdmin { return g.cfg.Keys.(keyAdmin) }

// storedKey is keys.Key under another name, so a view can embed it beside
// a "key" field.
type storedKey = keys.Key

// keyView is a key as /key/* answers it: the stored fields and "key": the
// secret on /key/generate, else the token (LiteLLM echoes the secret it was
// sent; the bridge never shows a secret again).
type keyView struct {
	Key string `json:"key"`
	*storedKey
}

// generateKey answers POST /key/generate.
func (g *Gateway) generateKey(c echo.Context) error {
	r, err := g.keyRequest(c)
	if err != nil {
		return err
	}
	if g.master != nil && r.Key == string(g.master) {
		return schema.Invalid("key", schema.CodeInvalidValue, "A virtual key cannot be the master key; choose another or leave 'key' out.")
	}
	secret, k, err := g.keyStore().Generate(c.Request().Context(), r.Key, r.Params)
	if err != nil {
		return err
	}
	// The secret, shown this once.
	return c.JSON(http.StatusOK, keyView{Key: secret, storedKey: k})
}

// updateKey answers POST /key/update: "key" names the key, the other
// fields change (left out: kept; null: removed).
func (g *Gateway) updateKey(c echo.Context) error {
	r, err := g.keyRequest(c)
	if err != nil {
		return err
	}
	token, err := tokenParam("key", r.Key)
	if err != nil {
		return err
	}
	return g.changeKey(c, token, r.Params)
}

// blockKey answers POST /key/block and /key/unblock ({"key": ...}).
func (g *Gateway) blockKey(blocked bool) echo.HandlerFunc {
	return func(c echo.Context) error {
		var body struct {
			Key string `json:"key"`
		}
		if err := decodeKeyBody(c, &body); err != nil {
			return err
		}
		token, err := tokenParam("key", body.Key)
		if err != nil {
			return err
		}
		return g.changeKey(c, token, keys.Params{Blocked: keys.Of(blocked)})
	}
}

func (g *Gateway) changeKey(c echo.Context, token string, p keys.Params) error {
	k, err := g.keyStore().Update(c.Request().Context(), token, p)
	if errors.Is(err, keys.ErrNotFound) {
		return keys.NotFound("key", 1)
	}
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, keyView{Key: k.Token, storedKey: k})
}

// keyRequest reads a /key/generate or /key/update body and checks its
// models against the catalogue.
func (g *Gateway) keyRequest(c echo.Context) (keys.Request, error) {
	body, err := readKeyBody(c)
	if err != nil {
		return keys.Request{}, err
	}
	r, err := keys.DecodeRequest(body)
	if err != nil {
		return keys.Request{}, err
	}
	if r.Models.Value != nil {
		for i, m := range *r.Models.Value {
			if _, ok := g.core.Catalog().Lookup(m); !ok && m != keys.AllModels {
				return keys.Request{}, &schema.Error{Status: http.StatusBadRequest, Type: schema.TypeInvalidRequest, Code: schema.CodeModelNotFound,
					Param: fmt.Sprintf("models[%d]", i), Message: fmt.Sprintf("The model '%s' is not in this bridge's config.yaml; a key can name only its models (GET /v1/models lists them).", m)}
			}
		}
	}
	return r, nil
}

func readKeyBody(c echo.Context) ([]byte, error) {
	body, err := io.ReadAll(http.MaxBytesReader(c.Response(), c.Request().Body, maxKeyBody))
	if err != nil {
		return nil, err
	}
	return body, nil
}

func decodeKeyBody(c echo.Context, v any) error {
	body, err := readKeyBody(c)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return schema.Invalid("", schema.CodeInvalidJSON, "The body must be a JSON object with the fields of this endpoint: %s.", jsonProblem(err))
	}
	return nil
}

// jsonProblem describes a decode error without quoting the body.
func jsonProblem(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Sprintf("'%s' must be %s", te.Field, te.Type)
	}
	if msg := err.Error(); len(msg) < 120 && bytes.HasPrefix([]byte(msg), []byte("json: unknown field")) {
		return msg[len("json: "):]
	}
	return "it is not valid JSON"
}

// tokenParam reads a key named by its secret or token; a 400 naming param
// for anything else.
func tokenParam(param, v string) (string, error) {
	if v == "" {
		return "", schema.Invalid(param, schema.CodeInvalidValue, "'%s' is required: a key (sk-...) or its token.", param)
	}
	token, ok := keys.TokenOf(v)
	if !ok {
		return "", schema.Invalid(param, schema.CodeInvalidValue, "'%s' must be a key (sk-...) or its token (64 hex digits).", param)
	}
	return token, nil
}

// deleteKeys answers POST /key/delete {"keys": [...]}: all of them, or
// none and 404 when any does not exist.
func (g *Gateway) deleteKeys(c echo.Context) error {
	var body struct {
		Keys []string `json:"keys"`
	}
	if err := decodeKeyBody(c, &body); err != nil {
		return err
	}
	if len(body.Keys) == 0 {
		return schema.Invalid("keys", schema.CodeInvalidValue, "'keys' must list at least one key (sk-...) or token.")
	}
	tokens := make([]string, len(body.Keys))
	for i, v := range body.Keys {
		t, err := tokenParam(fmt.Sprintf("keys[%d]", i), v)
		if err != nil {
			return err
		}
		tokens[i] = t
	}
	missing, err := g.keyStore().Delete(c.Request().Context(), tokens)
	if err != nil {
		return err
	}
	if len(missing) > 0 {
		return keys.NotFound("keys", len(missing))
	}
	// A key made again later with the same secret starts afresh.
	if f, ok := g.cfg.Limits.(interface {
		Forget(ctx context.Context, token string) error
	}); ok {
		for _, t := range tokens {
			if err := f.Forget(c.Request().Context(), t); err != nil {
				g.log.Warn("could not drop a deleted key's limit state", "key", t[:min(12, len(t))], "error", err)
			}
		}
	}
	return c.JSON(http.StatusOK, map[string][]string{"deleted_keys": tokens})
}

// keyInfoView is the "info" of /key/info: the key, its budget window's
// spend (LiteLLM's "spend" and "budget_reset_at") and usage.
type keyInfoView struct {
	*storedKey
	Spend         float64    `json:"spend"`
	BudgetResetAt *time.Time `json:"budget_reset_at"`
	Usage         usageView  `json:"usage"`
}

type usageView struct {
	WindowStart  *time.Time `json:"window_start"`
	InputTokens  int64      `json:"input_tokens"`
	OutputTokens int64      `json:"output_tokens"`
	TotalTokens  int64      `json:"total_tokens"`
	Requests     int64      `json:"requests"`
}

// keyInfo answers GET /key/info?key=: the master key may ask about any
// key, a virtual key only about itself (403 otherwise, before looking, so
// the answer says nothing of other keys), and without ?key= about itself.
func (g *Gateway) keyInfo(c echo.Context) error {
	who := callerOf(c)
	q := c.QueryParam("key")
	var token string
	switch {
	case q == "" && who.Admin():
		return schema.Invalid("key", schema.CodeInvalidValue, "'key' is required: a key (sk-...) or its token.")
	case q == "":
		token = who.Key.Token
	default:
		var err error
		if token, err = tokenParam("key", q); err != nil {
			return err
		}
	}
	if !who.Admin() && token != who.Key.Token {
		return &schema.Error{Status: http.StatusForbidden, Type: schema.TypeInvalidRequest, Code: keys.CodeKeyAccessDenied, Param: "key",
			Message: "A virtual key may read only its own info; leave out ?key= or use the master key."}
	}
	ctx := c.Request().Context()
	k, err := g.keyStore().Get(ctx, token)
	if errors.Is(err, keys.ErrNotFound) {
		return keys.NotFound("key", 1)
	}
	if err != nil {
		return err
	}
	info := keyInfoView{storedKey: k}
	if g.cfg.Usage != nil {
		u, err := g.cfg.Usage.Usage(ctx, token)
		if err != nil {
			return fmt.Errorf("read usage of key %s: %w", keys.Caller{Key: k}.Alias(), err)
		}
		info.Spend, info.BudgetResetAt = u.Spend, u.BudgetResetAt
		info.Usage = usageView{InputTokens: u.InputTokens, OutputTokens: u.OutputTokens, TotalTokens: u.InputTokens + u.OutputTokens, Requests: u.Requests}
		if !u.WindowStart.IsZero() {
			info.Usage.WindowStart = &u.WindowStart
		}
	}
	return c.JSON(http.StatusOK, map[string]any{"key": token, "info": info})
}

// keyListPage is /key/list's answer, LiteLLM's shape: tokens, or whole
// keys with ?return_full_object=true.
type keyListPage struct {
	Keys        []any `json:"keys"`
	TotalCount  int   `json:"total_count"`
	CurrentPage int   `json:"current_page"`
	TotalPages  int   `json:"total_pages"`
}

// listKeys answers GET /key/list?page=&size=&key_alias=&team_id=&user_id=&return_full_object=.
func (g *Gateway) listKeys(c echo.Context) error {
	page, err := intParam(c, "page", 1, 1, 1<<30)
	if err != nil {
		return err
	}
	size, err := intParam(c, "size", 10, 1, 100)
	if err != nil {
		return err
	}
	full := c.QueryParam("return_full_object") == "true"
	alias, team, user := c.QueryParam("key_alias"), c.QueryParam("team_id"), c.QueryParam("user_id")
	var match []*keys.Key
	for _, k := range g.keyStore().List() {
		if (alias == "" || k.KeyAlias == alias) && (team == "" || k.TeamID == team) && (user == "" || k.UserID == user) {
			match = append(match, k)
		}
	}
	out := keyListPage{Keys: []any{}, TotalCount: len(match), CurrentPage: page, TotalPages: (len(match) + size - 1) / size}
	for _, k := range match[min(len(match), (page-1)*size):min(len(match), page*size)] {
		if full {
			out.Keys = append(out.Keys, k)
		} else {
			out.Keys = append(out.Keys, k.Token)
		}
	}
	return c.JSON(http.StatusOK, out)
}

func intParam(c echo.Context, name string, def, lo, hi int) (int, error) {
	v := c.QueryParam(name)
	if v == "" {
		return def, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < lo || n > hi {
		return 0, schema.Invalid(name, schema.CodeInvalidValue, "'%s' must be a whole number from %d to %d.", name, lo, hi)
	}
	return n, nil
}
