package bridge

// This file holds the caller of a request: authenticate puts it in the echo
// context, handlers read it with callerOf.

import (
	"github.com/labstack/echo/v4"

	"github.com/laas-bridge/laas-bridge/keys"
)

// ctxCaller is the echo context key of the request's keys.Caller.
const ctxCaller = "laas_bridge.caller"

// setCaller records who sent the request.
func setCaller(c echo.Context, who keys.Caller) { c.Set(ctxCaller, who) }

// callerOf is who sent the request, as authenticate found it: the zero
// Caller (the admin) when authenticate did not run or auth is off.
func callerOf(c echo.Context) keys.Caller {
	who, _ := c.Get(ctxCaller).(keys.Caller)
	return who
}
