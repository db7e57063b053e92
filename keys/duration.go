package keys

import (
	"fmt"
	"regexp"
	"strconv"
	"time"
)

// Duration is one of LiteLLM's duration strings, as "duration" (a key's
// lifetime) and "budget_duration" (its budget window) take them: a positive
// whole number and a unit, s (seconds), m (minutes), h (hours), d (days),
// w (weeks) or mo (calendar months): "30s", "1h", "30d", "1mo".
type Duration struct {
	N    int
	Unit string // "s", "m", "h", "d", "w" or "mo"
}

var durationPattern = regexp.MustCompile(`^([0-9]{1,9})(s|m|h|d|w|mo)$`)

// MaxDuration is the longest duration ParseDuration takes: 100 years, far
// from where a time.Duration overflows.
const MaxDuration = 100 * 365 * 24 * time.Hour

// ParseDuration reads a LiteLLM duration string. Unlike LiteLLM, which
// reads "30min" as 30 minutes and "30" as 30 seconds, it takes the
// documented forms only, so a typo is refused rather than read as
// something else.
func ParseDuration(s string) (Duration, error) {
	m := durationPattern.FindStringSubmatch(s)
	if m == nil {
		return Duration{}, fmt.Errorf("%q is not a duration: use a whole number and s, m, h, d, w or mo, as in \"30d\" or \"1h\"", s)
	}
	n, _ := strconv.Atoi(m[1])
	if n < 1 {
		return Duration{}, fmt.Errorf("%q is not a duration: it must be at least 1%s", s, m[2])
	}
	d := Duration{N: n, Unit: m[2]}
	if unit := (Duration{N: 1, Unit: d.Unit}).Fixed(); time.Duration(n) > MaxDuration/unit { // before Fixed can overflow
		return Duration{}, fmt.Errorf("%q is not a duration: it must be at most 100 years", s)
	}
	return d, nil
}

// After returns t plus d: calendar months for "mo" (1 month after 31
// January is 28 or 29 February's end, as LiteLLM counts), a fixed length
// otherwise.
func (d Duration) After(t time.Time) time.Time {
	if d.Unit == "mo" {
		next := t.AddDate(0, d.N, 0)
		// AddDate normalises 31 January + 1 month to 3 March: stop at the
		// end of the target month instead.
		if want := (int(t.Month())-1+d.N)%12 + 1; int(next.Month()) != want {
			next = next.AddDate(0, 0, -next.Day())
		}
		return next
	}
	return t.Add(d.Fixed())
}

// Fixed is d's length, with a month counted as 30 days (for "mo" use After
// where calendar months matter).
func (d Duration) Fixed() time.Duration {
	unit := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour, "mo": 30 * 24 * time.Hour}[d.Unit]
	return time.Duration(d.N) * unit
}

// String is d as LiteLLM writes it.
func (d Duration) String() string { return strconv.Itoa(d.N) + d.Unit }
