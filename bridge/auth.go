package bridge

// This file holds who a caller is: the master key (the admin), a virtual
// key (Config.Keys), or nobody; authenticate puts the answer in the echo
// context, the NATS door asks callerFor itself.

import (
	"crypto/subtle"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

// KeyLookup finds a virtual key by the secret a caller sent. keys.Store is
// one. Safe for concurrent use; the Key it returns is shared, read-only.
type KeyLookup interface {
	// Lookup returns the key whose secret this is, blocked and expired
	// ones included.
	Lookup(secret string) (*keys.Key, bool)
}

// authenticate finds the caller from the Authorization header (callerFor)
// and refuses one it does not know with 401. It lets every caller through
// as the admin on a bridge with neither a master key nor virtual keys.
func (g *Gateway) authenticate(next echo.HandlerFunc) echo.HandlerFunc {
	if g.cfg.MasterKey == "" && g.cfg.Keys == nil {
		return next
	}
	return func(c echo.Context) error {
		who, err := g.callerFor(c.Request().Header.Get(echo.HeaderAuthorization))
		if err != nil {
			return err
		}
		setCaller(c, who)
		return next(c)
	}
}

// callerFor reads an Authorization header: "Bearer <master key>" is the
// admin; "Bearer <virtual key>" that key's holder, unless the key is
// blocked or expired (401); anything else a 401 invalid_api_key, except on
// a bridge without a master key, where it is the admin (auth is off; a
// virtual key presented there still counts as that key).
func (g *Gateway) callerFor(auth string) (keys.Caller, error) {
	token, bearer := strings.CutPrefix(auth, "Bearer ")
	token = strings.TrimSpace(token)
	if bearer && g.master != nil && subtle.ConstantTimeCompare([]byte(token), g.master) == 1 {
		return keys.Caller{}, nil
	}
	if bearer && g.cfg.Keys != nil {
		if k, ok := g.cfg.Keys.Lookup(token); ok {
			if err := k.Usable(time.Now()); err != nil {
				return keys.Caller{}, err
			}
			return keys.Caller{Key: k}, nil
		}
	}
	if g.master == nil {
		return keys.Caller{}, nil
	}
	send := "Send the bridge's master key as 'Authorization: Bearer <key>'."
	if g.cfg.Keys != nil {
		send = "Send your API key as 'Authorization: Bearer <key>'."
	}
	msg := "Incorrect API key provided. " + send
	if auth == "" {
		msg = "You didn't provide an API key. " + send
	}
	return keys.Caller{}, &schema.Error{Status: http.StatusUnauthorized, Type: schema.TypeInvalidRequest, Code: schema.CodeInvalidAPIKey, Message: msg}
}

// adminOnly refuses a virtual key on a route only the master key may call
// (401, as LiteLLM answers).
func adminOnly(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if !callerOf(c).Admin() {
			return keys.AdminOnly(c.Path())
		}
		return next(c)
	}
}
