package laas

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

// TestResponseHeaderTimeout: a call made without a deadline to a LaaS that
// takes the request and never sends its headers ends at the transport's
// response header timeout, as an upstream timeout (504 upstream_timeout,
// retryable), not never.
func TestResponseHeaderTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)
	c, err := NewClient(Config{BaseURL: srv.URL, ProjectCode: testProject, APIKey: testAPIKey, ResponseHeaderTimeout: 200 * time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := c.Complete(context.Background(), testRequest())
		done <- err
	}()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Complete without a deadline did not return within 10s of a LaaS that never sends headers (response header timeout 200ms)")
	}
	var ue *UpstreamError
	if !errors.As(err, &ue) {
		t.Fatalf("err = %T %v, want *UpstreamError", err, err)
	}
	if !ue.Timeout || ue.Status != 0 || !ue.Retryable() {
		t.Errorf("UpstreamError{Status: %d, Timeout: %v, Retryable: %v, Err: %v}, want a retryable timeout without a status", ue.Status, ue.Timeout, ue.Retryable(), ue.Err)
	}
	oe := ue.OpenAI()
	if oe.Status != http.StatusGatewayTimeout || oe.Type != schema.TypeTimeout || oe.Code != schema.CodeUpstreamTimeout {
		t.Errorf("OpenAI() = %d %s %s, want 504 timeout_error upstream_timeout", oe.Status, oe.Type, oe.Code)
	}
}

func TestLongestTimeout(t *testing.T) {
	tests := []struct {
		name   string
		models []schema.Model
		want   time.Duration
	}{
		{"no models", nil, DefaultResponseHeaderTimeout},
		{"models without a timeout", []schema.Model{{Alias: "a"}}, schema.DefaultTimeout},
		{"the longest wins", []schema.Model{{Alias: "a", Timeout: 2 * time.Second}, {Alias: "b", Timeout: 2 * time.Hour}, {Alias: "c"}}, 2 * time.Hour},
		{"shorter than the default", []schema.Model{{Alias: "a", Timeout: 30 * time.Second}}, 30 * time.Second},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := LongestTimeout(tc.models); got != tc.want {
				t.Errorf("LongestTimeout = %v, want %v", got, tc.want)
			}
		})
	}
}
