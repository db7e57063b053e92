package harness

import (
	"io"
	"net"
	"net/http"
	"sync/atomic"
)

// traceSink is an OTLP/HTTP endpoint that takes every export and keeps
// only counts: what a collector costs the bridge to send to, without a
// collector's own CPU in the measurement (it runs in the bench's process).
type traceSink struct {
	srv            *http.Server
	url            string
	exports, bytes atomic.Int64
}

// startTraceSink serves the sink on a free loopback port.
func startTraceSink() (*traceSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &traceSink{url: "http://" + ln.Addr().String()}
	s.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		s.exports.Add(1)
		s.bytes.Add(n)
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

// env is what makes a started bridge export every span to the sink.
func (s *traceSink) env() []string {
	return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + s.url, "OTEL_TRACES_SAMPLER=always_on", "OTEL_SERVICE_NAME=laas-bridge-bench"}
}

func (s *traceSink) close() { _ = s.srv.Close() }
