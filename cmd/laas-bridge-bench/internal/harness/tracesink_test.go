package harness

import (
	"net/http"
	"slices"
	"strings"
	"testing"
)

// TestTraceSink: the sink takes OTLP exports and counts them and their
// bytes; the env it gives a bridge points the exporter at it and samples
// every span.
func TestTraceSink(t *testing.T) {
	s, err := startTraceSink()
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	for _, body := range []string{"abc", "defgh"} {
		resp, err := http.Post(s.url+"/v1/traces", "application/x-protobuf", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("export answered %d", resp.StatusCode)
		}
	}
	if s.exports.Load() != 2 || s.bytes.Load() != 8 {
		t.Errorf("sink counted %d exports, %d bytes; want 2, 8", s.exports.Load(), s.bytes.Load())
	}
	if env := s.env(); !slices.Contains(env, "OTEL_EXPORTER_OTLP_ENDPOINT="+s.url) || !slices.Contains(env, "OTEL_TRACES_SAMPLER=always_on") {
		t.Errorf("env %v", env)
	}
}
