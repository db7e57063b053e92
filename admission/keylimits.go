package admission

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

// KeyLimits enforces virtual keys' limits for the core (keys.Limits):
// Admit takes what a request needs (a parallel lease, an rpm slot) or
// refuses it with a *schema.Error; Undo gives it back when the request is
// then not queued.
type KeyLimits interface {
	Admit(ctx context.Context, k *keys.Key, id string, deadline time.Time, wait bool) (keys.Admission, error)
	Undo(ctx context.Context, adm keys.Admission)
}

var _ KeyLimits = (*keys.Limits)(nil)

// KeyResolver finds a virtual key by its token, as it is now (the keys
// store's cache): no I/O.
type KeyResolver interface {
	ByToken(token string) (*keys.Key, bool)
}

// currentKey replaces the caller's key with the key as it is now, so a
// door that knows only a token (a batch line, a replay) gets the key's
// current models and limits, and a key deleted, blocked or expired since
// is refused at every door.
func (c *Core) currentKey(ck *Checked) error {
	if ck.Caller.Key == nil || c.cfg.Keys == nil {
		return nil
	}
	k, ok := c.cfg.Keys.ByToken(ck.Caller.Key.Token)
	if !ok {
		return &schema.Error{Status: http.StatusUnauthorized, Type: schema.TypeInvalidRequest, Code: schema.CodeInvalidAPIKey,
			Message: "The virtual key that sent this request no longer exists."}
	}
	if err := k.Usable(time.Now()); err != nil {
		return err
	}
	ck.Caller.Key = k
	return nil
}

// limitKey runs the caller's key limits for a request that must start
// before deadline. The admin, and a core without limits, pass at once.
func (c *Core) limitKey(ctx context.Context, ck *Checked, deadline time.Time) (keys.Admission, error) {
	k := ck.Caller.Key
	if k == nil || c.cfg.Limits == nil {
		return keys.Admission{}, nil
	}
	adm, err := c.cfg.Limits.Admit(ctx, k, ck.ID, deadline, ck.QueueWait)
	if _, refused := errors.AsType[*schema.Error](err); err == nil || refused {
		return adm, err
	}
	if ctx.Err() != nil {
		return adm, CallerGone(err)
	}
	// The limits' state could not be read or written (NATS unavailable):
	// the request cannot be admitted safely now.
	return adm, &schema.Error{Status: http.StatusServiceUnavailable, Type: schema.TypeServer, Code: schema.CodeQueueUnavailable,
		Message: "The key's limits cannot be checked right now; try again shortly.", RetryAfter: 1, Cause: err}
}

// undoKey gives back what limitKey took, for a request not queued.
func (c *Core) undoKey(ctx context.Context, adm keys.Admission) {
	if c.cfg.Limits != nil {
		c.cfg.Limits.Undo(context.WithoutCancel(ctx), adm)
	}
}
