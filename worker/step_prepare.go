package worker

// This file holds the prepare step: the envelope's request becomes the
// LaaS call. The admission core checked the request (multimodal parts
// included) before it queued it; the worker trusts that and only decodes,
// validates and translates.

import (
	"context"

	"github.com/laas-bridge/laas-bridge/laas"
	"github.com/laas-bridge/laas-bridge/schema"
)

// prepare builds the job's LaaS call (j.model, j.laasReq); a request that
// cannot be one is answered with its error.
func (p *Pool) prepare(next handlerFunc) handlerFunc {
	return func(ctx context.Context, j *job) {
		req, model, err := p.translate(&j.env)
		if err != nil {
			p.finish(j, schema.ErrorReply(j.env.ID, schema.AsError(err)), 0)
			return
		}
		j.laasReq, j.model = req, model
		next(ctx, j)
	}
}

// translate turns the envelope into the LaaS call; its errors are the
// caller's (a request published by a producer that skipped the gateway's
// checks): a model not in the catalogue, a request that does not decode or
// validate, a preset override the pool does not allow.
func (p *Pool) translate(env *schema.Envelope) (*schema.LaaSRequest, schema.Model, error) {
	model, ok := p.catalog.Load().Lookup(env.Model)
	if !ok {
		return nil, model, schema.ModelNotFound(env.Model)
	}
	req, err := schema.DecodeChatRequest(env.Request)
	if err != nil {
		return nil, model, err
	}
	if err := req.Validate(); err != nil {
		return nil, model, err
	}
	if req.PresetHash != "" {
		if !p.cfg.AllowPresetOverride {
			return nil, model, schema.PresetOverrideDisabled()
		}
		model.PresetHash = req.PresetHash
	}
	laasReq, err := laas.ToLaaS(req, model)
	return laasReq, model, err
}
