package schema_test

import (
	"encoding/json"
	"errors"
	"testing"

	"github.com/laas-bridge/laas-bridge/schema"
)

// Helpers shared by this package's tests.

// wantError asserts that err is, or wraps, a *schema.Error whose fields equal
// want's (Cause is not compared).
func wantError(t *testing.T, err error, want *schema.Error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Fatalf("error = %v, want nil", err)
		}
		return
	}
	var got *schema.Error
	if !errors.As(err, &got) {
		t.Fatalf("error = %v (%T), want a *schema.Error", err, err)
	}
	if got == nil {
		t.Fatalf("error is a nil *schema.Error, want %+v", *want)
	}
	g, w := *got, *want
	g.Cause, w.Cause = nil, nil
	if g != w {
		t.Errorf("error =\n\t%+v\nwant\n\t%+v", g, w)
	}
}

func marshal(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("json.Marshal(%#v): %v", v, err)
	}
	return string(b)
}

func ptr[T any](v T) *T { return &v }
