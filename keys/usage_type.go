package keys

import "time"

// Usage is a key's usage in its current budget period, as /key/info shows
// it.
type Usage struct {
	Spend                     float64
	InputTokens, OutputTokens int64
	Requests                  int64
	// InFlight is the requests holding a parallel lease (counted only for a
	// key with max_parallel_requests); TokensThisMinute the tokens in the
	// current tpm window.
	InFlight, TokensThisMinute int64
	// WindowStart is when the period began (zero for a budget that never
	// resets and no usage yet); BudgetResetAt when it ends (nil: never).
	WindowStart   time.Time
	BudgetResetAt *time.Time
}
