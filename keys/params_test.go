package keys_test

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/keys"
	"github.com/laas-bridge/laas-bridge/schema"
)

// TestDecodeRequestRefuses: every malformed /key/generate or /key/update
// body is a 400 naming the field.
func TestDecodeRequestRefuses(t *testing.T) {
	for _, tc := range []struct {
		name, body, code, param string
	}{
		{"not JSON", `{`, schema.CodeInvalidJSON, ""},
		{"not an object", `[1]`, schema.CodeInvalidJSON, ""},
		{"negative rpm", `{"rpm_limit": -1}`, schema.CodeInvalidValue, "rpm_limit"},
		{"negative tpm", `{"tpm_limit": -5}`, schema.CodeInvalidValue, "tpm_limit"},
		{"negative parallel", `{"max_parallel_requests": -1}`, schema.CodeInvalidValue, "max_parallel_requests"},
		{"negative budget", `{"max_budget": -0.5}`, schema.CodeInvalidValue, "max_budget"},
		{"fractional rpm", `{"rpm_limit": 1.5}`, schema.CodeInvalidValue, "rpm_limit"},
		{"rpm as a string", `{"rpm_limit": "60"}`, schema.CodeInvalidValue, "rpm_limit"},
		{"bad duration", `{"duration": "30 days"}`, schema.CodeInvalidValue, "duration"},
		{"duration of 30min (LiteLLM reads 30m)", `{"duration": "30min"}`, schema.CodeInvalidValue, "duration"},
		{"zero duration", `{"duration": "0d"}`, schema.CodeInvalidValue, "duration"},
		{"bad budget_duration", `{"budget_duration": "monthly"}`, schema.CodeInvalidValue, "budget_duration"},
		{"models not strings", `{"models": [1, 2]}`, schema.CodeInvalidValue, "models"},
		{"models not a list", `{"models": "m1"}`, schema.CodeInvalidValue, "models"},
		{"empty model name", `{"models": ["m1", " "]}`, schema.CodeInvalidValue, "models[1]"},
		{"metadata not an object", `{"metadata": [1]}`, schema.CodeInvalidValue, "metadata"},
		{"blocked not a bool", `{"blocked": "yes"}`, schema.CodeInvalidValue, "blocked"},
		{"alias too long", `{"key_alias": "` + strings.Repeat("a", 256) + `"}`, schema.CodeInvalidValue, "key_alias"},
		{"unknown field", `{"model_rpm_limit": {"m1": 5}}`, schema.CodeUnsupported, "model_rpm_limit"},
		{"key not a string", `{"key": 5}`, schema.CodeInvalidValue, "key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := keys.DecodeRequest([]byte(tc.body))
			var e *schema.Error
			if !errors.As(err, &e) {
				t.Fatalf("DecodeRequest = %v; want a *schema.Error", err)
			}
			if e.Status != 400 || e.Code != tc.code || e.Param != tc.param {
				t.Errorf("got %d %s %q (%s); want 400 %s %q", e.Status, e.Code, e.Param, e.Message, tc.code, tc.param)
			}
		})
	}
}

// TestDecodeRequestFields: LiteLLM's fields are read, null marks a field
// to remove, an unknown field that is null is ignored (a LiteLLM client's
// unset field), and "all-proxy-models" means every model.
func TestDecodeRequestFields(t *testing.T) {
	r, err := keys.DecodeRequest([]byte(`{"key": "sk-x", "key_alias": "a", "models": ["m1"], "rpm_limit": 60, "tpm_limit": null,
		"max_parallel_requests": 2, "max_budget": 1.5, "budget_duration": "30d", "duration": "1mo", "metadata": {"app": "x"},
		"team_id": "t", "user_id": "u", "blocked": false, "aliases": null}`))
	if err != nil {
		t.Fatal(err)
	}
	if r.Key != "sk-x" || *r.KeyAlias.Value != "a" || *r.RPMLimit.Value != 60 || !r.TPMLimit.Set || r.TPMLimit.Value != nil ||
		*r.MaxParallelRequests.Value != 2 || *r.MaxBudget.Value != 1.5 || *r.BudgetDuration.Value != "30d" || *r.Duration.Value != "1mo" ||
		(*r.Metadata.Value)["app"] != "x" || *r.TeamID.Value != "t" || *r.UserID.Value != "u" || *r.Blocked.Value || r.UserID.Set != true {
		t.Errorf("decoded %+v", r)
	}
	if r.Models.Value == nil || len(*r.Models.Value) != 1 {
		t.Errorf("models %+v", r.Models)
	}
	if none, _ := keys.DecodeRequest([]byte(`{}`)); none.RPMLimit.Set || none.Models.Set {
		t.Error("a field left out is marked set")
	}
}

func TestParseDuration(t *testing.T) {
	jan31 := time.Date(2026, 1, 31, 10, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		in   string
		want time.Time
	}{
		{"30s", jan31.Add(30 * time.Second)},
		{"5m", jan31.Add(5 * time.Minute)},
		{"1h", jan31.Add(time.Hour)},
		{"30d", jan31.Add(30 * 24 * time.Hour)},
		{"2w", jan31.Add(14 * 24 * time.Hour)},
		{"1mo", time.Date(2026, 2, 28, 10, 0, 0, 0, time.UTC)},
		{"12mo", time.Date(2027, 1, 31, 10, 0, 0, 0, time.UTC)},
	} {
		d, err := keys.ParseDuration(tc.in)
		if err != nil {
			t.Errorf("ParseDuration(%q): %v", tc.in, err)
			continue
		}
		if got := d.After(jan31); !got.Equal(tc.want) || d.String() != tc.in {
			t.Errorf("%q: After = %v, String %q; want %v", tc.in, got, d.String(), tc.want)
		}
	}
	for _, bad := range []string{"", "30", "30min", "1y", "-1d", "0s", "1.5h", "d"} {
		if _, err := keys.ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) took it", bad)
		}
	}
}

// TestKeyUsable: blocked and expired keys are refused with 401s of their
// own codes.
func TestKeyUsable(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	past, future := now.Add(-time.Second), now.Add(time.Hour)
	for _, tc := range []struct {
		name string
		k    keys.Key
		code string
	}{
		{"usable", keys.Key{Expires: &future}, ""},
		{"blocked", keys.Key{Blocked: true}, keys.CodeBlocked},
		{"expired", keys.Key{Expires: &past}, keys.CodeExpired},
		{"expiring now", keys.Key{Expires: &now}, keys.CodeExpired},
	} {
		e := tc.k.Usable(now)
		switch {
		case tc.code == "" && e != nil:
			t.Errorf("%s: %v", tc.name, e)
		case tc.code != "" && (e == nil || e.Status != 401 || e.Code != tc.code):
			t.Errorf("%s: %v; want 401 %s", tc.name, e, tc.code)
		}
	}
}
