package keys

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// ParseDuration reads LiteLLM's durations (budget_duration, duration):
// a whole number and a unit, "30s", "30m", "30h", "30d", "1mo" (30 days).
func ParseDuration(s string) (time.Duration, error) {
	units := []struct {
		suffix string
		unit   time.Duration
	}{{"mo", 30 * 24 * time.Hour}, {"s", time.Second}, {"m", time.Minute}, {"h", time.Hour}, {"d", 24 * time.Hour}, {"w", 7 * 24 * time.Hour}}
	for _, u := range units {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n <= 0 || n > int64(1<<62/u.unit) {
			break
		}
		return time.Duration(n) * u.unit, nil
	}
	return 0, fmt.Errorf("%q is not a duration such as 30s, 30m, 30h, 30d or 1mo", s)
}

// budgetEvery is how often the key's budget resets; 0 for never (or an
// unreadable budget_duration, which validation refuses).
func (k *Key) budgetEvery() time.Duration {
	if k.BudgetDuration == "" {
		return 0
	}
	d, err := ParseDuration(k.BudgetDuration)
	if err != nil {
		return 0
	}
	return d
}
