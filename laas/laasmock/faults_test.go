package laasmock

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/schema"
)

func faultBody(text string) string {
	return `{"hash":"h","messages":[{"role":"user","content":` + jsonString(text) + `}]}`
}

// faultCall posts body to srv and returns the response (body read whole,
// or cut: readErr) or the error of the round trip.
func faultCall(t *testing.T, srv *httptest.Server, body string, timeout time.Duration) (resp *http.Response, data []byte, readErr, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	r, _ := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+schema.LaaSChatPath, strings.NewReader(body))
	r.Header.Set(schema.LaaSHeaderProject, testProject)
	r.Header.Set(schema.LaaSHeaderAPIKey, testKey)
	resp, err = srv.Client().Do(r)
	if err != nil {
		return nil, nil, nil, err
	}
	defer resp.Body.Close()
	data, readErr = io.ReadAll(resp.Body)
	return resp, data, readErr, nil
}

func TestFaults(t *testing.T) {
	m := newMock(t, Config{ProjectCode: testProject, APIKey: testKey})
	srv := httptest.NewServer(m)
	defer srv.Close()
	whole := func(text string) []byte { // the answer the fault cuts
		return mustJSON(m.answer([]byte(faultBody(text)), request{Hash: "h"}, text))
	}

	t.Run("hang", func(t *testing.T) {
		_, _, _, err := faultCall(t, srv, faultBody("hi laasmock:fault=hang"), 300*time.Millisecond)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v, want the client's deadline", err)
		}
		waitStatus(t, m, "hi laasmock:fault=hang", StatusClientClosed)
	})
	t.Run("stall", func(t *testing.T) {
		resp, data, readErr, err := faultCall(t, srv, faultBody("hi laasmock:fault=stall"), 500*time.Millisecond)
		if err != nil || resp.StatusCode != 200 || !errors.Is(readErr, context.DeadlineExceeded) {
			t.Fatalf("resp %v, read error %v, error %v: want 200 headers then the client's deadline while reading", resp, readErr, err)
		}
		if want := whole("hi laasmock:fault=stall"); len(data) != len(want)/2 || resp.ContentLength != int64(len(want)) {
			t.Errorf("read %d of Content-Length %d bytes, want half of %d", len(data), resp.ContentLength, len(want))
		}
	})
	t.Run("reset", func(t *testing.T) {
		resp, _, readErr, err := faultCall(t, srv, faultBody("hi laasmock:fault=reset"), 5*time.Second)
		if err != nil || resp.StatusCode != 200 || !errors.Is(readErr, syscall.ECONNRESET) {
			t.Fatalf("resp %v, read error %v, error %v: want 200 headers then a connection reset", resp, readErr, err)
		}
	})
	t.Run("truncate", func(t *testing.T) {
		resp, data, readErr, err := faultCall(t, srv, faultBody("hi laasmock:fault=truncate"), 5*time.Second)
		if err != nil || resp.StatusCode != 200 || !errors.Is(readErr, io.ErrUnexpectedEOF) {
			t.Fatalf("resp %v, read error %v, error %v: want 200 headers then an unexpected EOF", resp, readErr, err)
		}
		if want := whole("hi laasmock:fault=truncate"); len(data) != len(want)/2 {
			t.Errorf("read %d bytes, want %d", len(data), len(want)/2)
		}
	})
	t.Run("nonjson", func(t *testing.T) {
		resp, data, readErr, err := faultCall(t, srv, faultBody("hi laasmock:fault=nonjson"), 5*time.Second)
		if err != nil || readErr != nil || resp.StatusCode != 200 || string(data) != nonJSONBody || json.Valid(data) {
			t.Fatalf("resp %v, body %q, errors %v %v: want 200 with the HTML page", resp, data, readErr, err)
		}
	})
	t.Run("trickle", func(t *testing.T) {
		start := time.Now()
		resp, data, readErr, err := faultCall(t, srv, faultBody("hi laasmock:trickle=300ms"), 10*time.Second)
		if err != nil || readErr != nil || resp.StatusCode != 200 {
			t.Fatalf("resp %v, errors %v %v", resp, readErr, err)
		}
		var got, want answer
		if err := json.Unmarshal(data, &got); err != nil {
			t.Fatal(err)
		}
		_ = json.Unmarshal(whole("hi laasmock:trickle=300ms"), &want)
		if got.ID != want.ID || got.Choices[0].Message.Content != want.Choices[0].Message.Content {
			t.Errorf("answer %+v, want %+v", got, want)
		}
		if took := time.Since(start); took < 300*time.Millisecond {
			t.Errorf("the trickle took %v, want at least 300ms", took)
		}
	})
	t.Run("status with a count, then answered", func(t *testing.T) {
		body := faultBody("hi laasmock:status=500x2")
		for i, want := range []int{500, 500, 200} {
			resp, _, _, err := faultCall(t, srv, body, 5*time.Second)
			if err != nil || resp.StatusCode != want {
				t.Fatalf("call %d: %v %v, want %d", i+1, resp, err, want)
			}
		}
	})
	t.Run("429 with Retry-After", func(t *testing.T) {
		for range 2 {
			resp, _, _, err := faultCall(t, srv, faultBody("hi laasmock:status=429 laasmock:retry-after=3"), 5*time.Second)
			if err != nil || resp.StatusCode != 429 || resp.Header.Get("Retry-After") != "3" {
				t.Fatalf("%v %v, want 429 with Retry-After: 3 every time", resp, err)
			}
		}
	})
	for _, bad := range []string{"laasmock:fault=explode", "laasmock:status=200", "laasmock:status=500x0", "laasmock:trickle=soon",
		"laasmock:colour=red", "laasmock:retry-after=2", "laasmock:fault=hang laasmock:status=500"} {
		t.Run("refused "+bad, func(t *testing.T) {
			resp, data, _, err := faultCall(t, srv, faultBody(bad), 5*time.Second)
			if err != nil || resp.StatusCode != 400 {
				t.Fatalf("%v %v, want 400", resp, err)
			}
			if !strings.Contains(string(data), "laasmock:") && !strings.Contains(string(data), "directive") {
				t.Errorf("message %s does not name the directive", data)
			}
		})
	}
}

// waitStatus waits until the log's entry for lastUser has status want.
func waitStatus(t *testing.T, m *Mock, lastUser string, want int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, e := range m.Log() {
			if e.LastUser == lastUser && e.Status == want {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log entry %q with status %d within 10s: %+v", lastUser, want, m.Log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStatusCountsBounded: the bodies with a counted status directive that
// the mock remembers stay at maxFaultBodies however many distinct bodies
// arrive; the oldest is forgotten (counts from zero again), the newest is
// still counted.
func TestStatusCountsBounded(t *testing.T) {
	m := newMock(t, Config{ProjectCode: testProject, APIKey: testKey})
	f := &fault{status: http.StatusServiceUnavailable, times: 1}
	body := func(i int) []byte { return []byte(faultBody(fmt.Sprintf("call %d laasmock:status=503x1", i))) }
	const n = maxFaultBodies + 100
	for i := range n {
		if !m.statusApplies(f, body(i)) {
			t.Fatalf("body %d: the status did not apply to its first request", i)
		}
	}
	if got := len(m.faultSeen); got != maxFaultBodies {
		t.Fatalf("the mock remembers %d bodies, want %d", got, maxFaultBodies)
	}
	if m.statusApplies(f, body(n-1)) {
		t.Error("the newest body's second request got the status again; want it counted")
	}
	if !m.statusApplies(f, body(0)) {
		t.Error("the oldest body's second request was still counted; want it forgotten")
	}
	if got := len(m.faultSeen); got != maxFaultBodies {
		t.Fatalf("the mock remembers %d bodies, want %d", got, maxFaultBodies)
	}
}
