package bridge

// This file holds the exact response cache: the completions of models
// that opt in (config.yaml's litellm_params.cache.ttl), kept in the NATS
// KV bucket schema.BucketCache that every gateway shares, each entry with
// its own TTL. A request is looked up after the admission core checked it
// (so the caller's key may call the model: a hit never crosses model
// access) and before it is queued; a hit answers without queueing.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/schema"
)

// HeaderCache says what the response cache did for a request to a model
// that has one: "hit" (answered from the cache, nothing queued), "miss"
// (looked up, not found: queued) or "bypass" (not looked up: the request
// said no-cache, or carries an Idempotency-Key). Requests to other models
// do not have it.
const HeaderCache = "X-Laas-Bridge-Cache"

// The values of HeaderCache, and the result label of
// laas_bridge_gateway_cache_total.
const (
	cacheHit    = "hit"
	cacheMiss   = "miss"
	cacheBypass = "bypass"
)

// MaxCachedCompletion bounds a completion the cache stores; a larger one
// is answered but not stored.
const MaxCachedCompletion = 1 << 20

// cacheTimeout bounds one read or write of the cache. A cache that does
// not answer in time is a miss (or an answer not stored), never an error.
const cacheTimeout = 2 * time.Second

// responseCache is the gateway's side of the response cache. Safe for
// concurrent use.
type responseCache struct {
	kv      jetstream.KeyValue     // nil: no bucket, no caching
	results *prometheus.CounterVec // model, result; nil: no metrics
	log     *slog.Logger
	// ran is, by model alias, what the workers ran for this gateway's
	// latest 200 answer (schema.Reply.Ran): an entry made under anything
	// else (a reload changed the model's LaaS model or preset, on the
	// workers or here) is not served, and is replaced.
	ran sync.Map
}

// newResponseCache opens the cache bucket (queue.Ensure makes it) and
// registers laas_bridge_gateway_cache_total in reg, when set. A NATS
// without the bucket leaves the cache off, with a warning.
func newResponseCache(ctx context.Context, js jetstream.JetStream, reg prometheus.Registerer, log *slog.Logger) (*responseCache, error) {
	rc := &responseCache{log: log}
	kv, err := js.KeyValue(ctx, schema.BucketCache)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound):
		log.Warn("no response cache bucket: models with a cache in config.yaml are not cached", "bucket", schema.BucketCache)
	case err != nil:
		return nil, fmt.Errorf("response cache %s: %w", schema.BucketCache, err)
	default:
		rc.kv = kv
	}
	if reg != nil {
		rc.results = prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "laas_bridge", Subsystem: "gateway", Name: "cache_total",
			Help: "Chat requests to models with a response cache, by model alias and result: hit (answered from the cache), miss (looked up, queued), bypass (not looked up: no-cache or an Idempotency-Key)."},
			[]string{"model", "result"})
		if err := reg.Register(rc.results); err != nil {
			return nil, fmt.Errorf("gateway metrics: %w", err)
		}
	}
	return rc, nil
}

// cachePlan is what the cache does for one request.
type cachePlan struct {
	key   string // the entry's key: see cacheKey
	model string // the alias, for the metric
	read  bool   // look the answer up
	store bool   // keep a 200 answer
	ttl   time.Duration
}

// cachePlanKey holds a request's *cachePlan in the echo context when its
// answer is to be stored (decodeRawReply stores it).
const cachePlanKey = "laas_bridge_cache_plan"

// plan is what the cache does for a checked request; nil when its model
// has no cache (or the gateway none): nothing is read or written then.
func (rc *responseCache) plan(ck *admission.Checked, h http.Header) (*cachePlan, error) {
	if rc == nil || rc.kv == nil || ck.Model.CacheTTL <= 0 || ck.Chat == nil {
		return nil, nil
	}
	cc, err := ck.Chat.ParseCache()
	if err != nil {
		return nil, err
	}
	noCache, noStore := cacheControlHeader(h)
	p := &cachePlan{model: ck.Model.Alias, ttl: ck.Model.CacheTTL,
		// A request with an Idempotency-Key is promised its first call's
		// answer on a retry: it is answered by the idempotency store, not
		// by the cache, which may have changed in between.
		read:  !cc.NoCache && !noCache && ck.IdempotencyKey == "",
		store: !cc.NoStore && !noStore,
	}
	if cc.TTL > 0 {
		p.ttl = cc.TTL
	}
	p.ttl = min(p.ttl, schema.MaxCacheTTL)
	if p.read || p.store {
		if p.key, err = cacheKey(ck); err != nil {
			return nil, err
		}
	}
	return p, nil
}

// cacheControlHeader reads the no-cache and no-store directives of the
// request's Cache-Control headers; others are ignored.
func cacheControlHeader(h http.Header) (noCache, noStore bool) {
	for _, v := range h.Values("Cache-Control") {
		for d := range strings.SplitSeq(v, ",") {
			switch strings.ToLower(strings.TrimSpace(d)) {
			case "no-cache":
				noCache = true
			case "no-store":
				noStore = true
			}
		}
	}
	return noCache, noStore
}

// cacheKey is the hex SHA-256 of what decides a request's answer: the
// model (alias, LaaS model, service type), the preset that runs (the
// request's preset_hash where allowed, else the model's) and the request
// as decoded, re-encoded without the fields that do not change the answer
// (model, stream, stream_options, user, cache, preset_hash: the preset is
// hashed above). Inline images and documents are hashed by the SHA-256 of
// their URL or data, which covers their bytes. The encoding is Go's of
// schema.ChatCompletionRequest: fixed field order, params sorted by name,
// raw fields (response_format, stop) compacted.
func cacheKey(ck *admission.Checked) (string, error) {
	req := *ck.Chat
	preset := ck.Model.PresetHash
	if req.PresetHash != "" {
		preset = req.PresetHash
	}
	req.Model, req.Stream, req.StreamOptions, req.User, req.Cache, req.PresetHash = "", false, nil, "", nil, ""
	req.Messages = digestMedia(req.Messages)
	h := sha256.New()
	for _, s := range []string{"laas-bridge response cache v1", ck.Model.Alias, ck.Model.LaaSModel, ck.Model.ServiceType, preset} {
		writeField(h, s)
	}
	if err := json.NewEncoder(h).Encode(&req); err != nil {
		return "", fmt.Errorf("cache key: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// writeField writes s length-prefixed, so fields cannot run into each other.
func writeField(h hash.Hash, s string) {
	h.Write([]byte(strconv.Itoa(len(s))))
	h.Write([]byte{':'})
	h.Write([]byte(s))
}

// digestMedia returns messages with every image, document and file URL or
// data replaced by "sha256:" and its hex digest; the messages it was given
// are not changed.
func digestMedia(messages []schema.Message) []schema.Message {
	out := make([]schema.Message, len(messages))
	copy(out, messages)
	for i := range out {
		if out[i].Content.Parts == nil {
			continue
		}
		parts := make([]schema.ContentPart, len(out[i].Content.Parts))
		copy(parts, out[i].Content.Parts)
		for j := range parts {
			p := &parts[j]
			if p.ImageURL != nil {
				p.ImageURL = &schema.URLRef{URL: digest(p.ImageURL.URL), Detail: p.ImageURL.Detail}
			}
			if p.DocumentURL != nil {
				p.DocumentURL = &schema.URLRef{URL: digest(p.DocumentURL.URL), Detail: p.DocumentURL.Detail}
			}
			if p.File != nil {
				p.File = &schema.FileRef{FileData: digest(p.File.FileData), FileID: p.File.FileID, Filename: p.File.Filename}
			}
			p.FileData, p.FileURL = digest(p.FileData), digest(p.FileURL)
		}
		out[i].Content.Parts = parts
	}
	return out
}

func digest(s string) string {
	if s == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(s))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// lookup returns the completion kept under key for model, or nil. An
// entry is served only when it was made by what the workers run now for
// model (as this gateway last saw: none seen yet is a miss); one made by
// anything else is deleted. A cache that fails is a miss, logged.
func (rc *responseCache) lookup(ctx context.Context, key, model string) []byte {
	ctx, cancel := context.WithTimeout(ctx, cacheTimeout)
	defer cancel()
	e, err := rc.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil
	case err != nil:
		rc.log.Warn("response cache read failed; the request is queued", "error", err)
		return nil
	}
	ran, completion, ok := bytes.Cut(e.Value(), []byte{'\n'})
	current, known := rc.ran.Load(model)
	switch {
	case !known: // this gateway has seen no answer for model yet
		return nil
	case !ok || string(ran) != current.(string):
		// Only that entry: one another gateway wrote since stays.
		if err := rc.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision())); err != nil {
			rc.log.Debug("response cache: an entry made by an earlier config was not deleted", "model", model, "error", err)
		}
		return nil
	}
	return completion
}

// keep stores a 200 answer's completion under the plan's key with its
// TTL. An entry already there (another gateway stored the same answer
// first) is left as it is; a completion over MaxCachedCompletion is not
// stored; a failure is logged, never the caller's.
func (rc *responseCache) keep(p *cachePlan, ran string, completion []byte) {
	if ran == "" { // a worker that does not say what it ran
		return
	}
	rc.ran.Store(p.model, ran)
	if len(completion) > MaxCachedCompletion {
		rc.log.Debug("answer too large for the response cache; not stored", "model", p.model, "bytes", len(completion))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), cacheTimeout)
	defer cancel()
	// The entry: what ran, a newline, the completion's JSON.
	entry := append(append(make([]byte, 0, len(ran)+1+len(completion)), ran...), '\n')
	entry = append(entry, completion...)
	if _, err := rc.kv.Create(ctx, p.key, entry, jetstream.KeyTTL(p.ttl)); err != nil && !errors.Is(err, jetstream.ErrKeyExists) {
		rc.log.Warn("response cache write failed; the answer is not cached", "model", p.model, "error", err)
	}
}

// count adds one request to laas_bridge_gateway_cache_total.
func (rc *responseCache) count(model, result string) {
	if rc.results != nil {
		rc.results.WithLabelValues(model, result).Inc()
	}
}

// admitCached answers a checked request from the response cache when it
// can (a pending whose answer is already there, as an idempotent replay
// is), and otherwise admits it (Gateway.admit), marking a 200 answer to
// be stored.
func (g *Gateway) admitCached(c echo.Context, ck *admission.Checked) (p *pending, replayed bool, err error) {
	plan, err := g.cache.plan(ck, c.Request().Header)
	if err != nil || plan == nil {
		if err != nil {
			return nil, false, err
		}
		return g.admit(c.Request().Context(), ck)
	}
	h := c.Response().Header()
	if !plan.read {
		h.Set(HeaderCache, cacheBypass)
		g.cache.count(plan.model, cacheBypass)
	} else if completion := g.cache.lookup(c.Request().Context(), plan.key, plan.model); completion != nil {
		raw, err := json.Marshal(rawReply{Reply: schema.Reply{ID: ck.ID, Status: http.StatusOK}, Completion: completion})
		if err != nil {
			return nil, false, err
		}
		h.Set(HeaderCache, cacheHit)
		g.cache.count(plan.model, cacheHit)
		now := time.Now()
		ch := make(chan []byte, 1)
		ch <- raw
		return &pending{id: ck.ID, model: ck.Model, enqueuedAt: now, timeout: ck.Timeout, deadline: now.Add(ck.Timeout), answer: ch}, false, nil
	} else {
		h.Set(HeaderCache, cacheMiss)
		g.cache.count(plan.model, cacheMiss)
	}
	if plan.store {
		c.Set(cachePlanKey, plan)
	}
	return g.admit(c.Request().Context(), ck)
}

// keepAnswer stores a 200 answer's completion when its request's plan
// says so (decodeRawReply calls it for every answer it decodes).
func (g *Gateway) keepAnswer(c echo.Context, rep *rawReply) {
	if p, ok := c.Get(cachePlanKey).(*cachePlan); ok && rep.Status == http.StatusOK {
		c.Set(cachePlanKey, nil) // once
		g.cache.keep(p, rep.Ran, rep.Completion)
	}
}
