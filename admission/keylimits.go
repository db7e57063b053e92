package admission

import (
	"context"
	"time"

	"github.com/laas-bridge/laas-bridge/keys"
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

// limitKey runs the caller's key limits for a request that must start
// before deadline. The admin, and a core without limits, pass at once.
func (c *Core) limitKey(ctx context.Context, ck *Checked, deadline time.Time) (keys.Admission, error) {
	k := ck.Caller.Key
	if k == nil || c.cfg.Limits == nil {
		return keys.Admission{}, nil
	}
	adm, err := c.cfg.Limits.Admit(ctx, k, ck.ID, deadline, ck.QueueWait)
	if err != nil && ctx.Err() != nil {
		return adm, CallerGone(err)
	}
	return adm, err
}

// undoKey gives back what limitKey took, for a request not queued.
func (c *Core) undoKey(ctx context.Context, adm keys.Admission) {
	if c.cfg.Limits != nil {
		c.cfg.Limits.Undo(context.WithoutCancel(ctx), adm)
	}
}
