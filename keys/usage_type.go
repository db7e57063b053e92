package keys

import "time"

// Usage is what a key has used in its current budget window (the whole
// time since it was made when it has no budget_duration), as /key/info
// shows it. Limits.Usage fills it.
type Usage struct {
	// Spend is the cost of the window's calls, in the currency of the
	// configured prices (LiteLLM's "spend").
	Spend float64
	// InputTokens and OutputTokens are the window's tokens, from LaaS's
	// usage.
	InputTokens, OutputTokens int64
	// Requests counts the window's calls.
	Requests int64
	// InFlight is the requests holding a parallel lease (counted only for a
	// key with max_parallel_requests); TokensThisMinute the tokens in the
	// current tpm window.
	InFlight, TokensThisMinute int64
	// WindowStart is when the window began (zero for a key with no
	// budget_duration and no usage yet).
	WindowStart time.Time
	// BudgetResetAt is when the next window begins; nil without a
	// budget_duration.
	BudgetResetAt *time.Time
}
