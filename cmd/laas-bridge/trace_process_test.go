package main

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/laas-bridge/laas-bridge/admission"
	"github.com/laas-bridge/laas-bridge/worker"
)

// otlpSpan is a span an OTLP receiver got, with its process's service.name.
type otlpSpan struct {
	service string
	*tracepb.Span
}

func (s otlpSpan) attr(key string) *commonpb.AnyValue {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return nil
}

func (s otlpSpan) durationMs() int64 {
	return int64(s.EndTimeUnixNano-s.StartTimeUnixNano) / int64(time.Millisecond)
}

// otlpReceiver is an OTLP/HTTP trace receiver (POST /v1/traces, protobuf,
// gzip or not) that keeps every span.
type otlpReceiver struct {
	mu    sync.Mutex
	spans []otlpSpan
	errs  []error
}

func (rc *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" {
		http.NotFound(w, r)
		return
	}
	var body io.Reader = r.Body
	if r.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(r.Body)
		if err != nil {
			rc.fail(w, err)
			return
		}
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil {
		rc.fail(w, err)
		return
	}
	var req coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(data, &req); err != nil {
		rc.fail(w, fmt.Errorf("OTLP body (content type %q): %w", r.Header.Get("Content-Type"), err))
		return
	}
	rc.mu.Lock()
	for _, rs := range req.ResourceSpans {
		service := ""
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				service = kv.Value.GetStringValue()
			}
		}
		for _, ss := range rs.ScopeSpans {
			for _, s := range ss.Spans {
				rc.spans = append(rc.spans, otlpSpan{service: service, Span: s})
			}
		}
	}
	rc.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

func (rc *otlpReceiver) fail(w http.ResponseWriter, err error) {
	rc.mu.Lock()
	rc.errs = append(rc.errs, err)
	rc.mu.Unlock()
	http.Error(w, err.Error(), http.StatusBadRequest)
}

// snapshot returns the spans received so far, by name, and any error.
func (rc *otlpReceiver) snapshot() (map[string][]otlpSpan, []otlpSpan, []error) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	byName := map[string][]otlpSpan{}
	for _, s := range rc.spans {
		byName[s.Name] = append(byName[s.Name], s)
	}
	return byName, append([]otlpSpan(nil), rc.spans...), append([]error(nil), rc.errs...)
}

// TestTraceAcrossGatewayAndWorkerProcesses runs a gateway and a worker as
// processes exporting to an in-test OTLP/HTTP receiver, sends one chat
// request with a caller's traceparent, and checks the trace they export:
// every span in the caller's trace, spans from both processes, a queue
// span (the request waits for the worker to start) as long as
// X-Laas-Bridge-Queue-Ms says, a LaaS call span with
// status 200 and attempt 1.
func TestTraceAcrossGatewayAndWorkerProcesses(t *testing.T) {
	const project, apiKey = "proj-trace", "key-trace"
	const callerTrace, callerSpan = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
	srv := listeningNATS(t)
	rc := &otlpReceiver{}
	collector := httptest.NewServer(rc)
	t.Cleanup(collector.Close)
	cfg, _ := filepath.Abs("testdata/config.yaml")
	otel := func(service string) []string {
		return []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + collector.URL, "OTEL_SERVICE_NAME=" + service, "OTEL_BSP_SCHEDULE_DELAY=100"}
	}

	_, mockURL := startProc(t, "mock-laas", t.TempDir(), baseEnv(), mockReady,
		"mock-laas", "--listen", "127.0.0.1:0", "--project", project, "--api-key", apiKey, "--latency", "20ms")
	gw, addr := startProc(t, "gateway", t.TempDir(), baseEnv(append(otel("trace-gateway"), "NATS_URL="+srv.ClientURL(), "BRIDGE_CONFIG="+cfg, "TEST_OWN_PRESET=own-hash")...),
		gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	req, _ := http.NewRequest("POST", "http://"+addr+"/v1/chat/completions",
		strings.NewReader(`{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"trace me"}]}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("traceparent", "00-"+callerTrace+"-"+callerSpan+"-01")
	// The request waits in the queue until the worker starts: a queue
	// wait of some hundreds of milliseconds, not a rounding error.
	type result struct {
		resp *http.Response
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		done <- result{resp, err}
	}()
	time.Sleep(300 * time.Millisecond)
	wk, _ := startProc(t, "worker", t.TempDir(), baseEnv(append(otel("trace-worker"), "NATS_URL="+srv.ClientURL(), "BRIDGE_CONFIG="+cfg, "TEST_OWN_PRESET=own-hash",
		"LAAS_PROJECT_CODE="+project, "LAAS_API_KEY="+apiKey, "LAAS_PRESET_HASH=default-hash", "LAAS_BASE_URL="+mockURL)...),
		workerReady, "worker", "--concurrency", "2")

	var res result
	select {
	case res = <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("no answer within 60s")
	}
	resp, err := res.resp, res.err
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	queueMs, err := strconv.ParseInt(resp.Header.Get("X-Laas-Bridge-Queue-Ms"), 10, 64)
	if err != nil {
		t.Fatalf("X-Laas-Bridge-Queue-Ms: %v", err)
	}

	want := []string{"POST /v1/chat/completions", admission.SpanAdmission, worker.SpanQueue, worker.SpanJob, worker.SpanCall, worker.SpanReply}
	var byName map[string][]otlpSpan
	var all []otlpSpan
	var errs []error
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		byName, all, errs = rc.snapshot()
		missing := 0
		for _, n := range want {
			if len(byName[n]) == 0 {
				missing++
			}
		}
		if missing == 0 || len(errs) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("within 20s the receiver got %d spans, not all of %v (%d missing); names: %v", len(all), want, missing, spanNames(byName))
		}
	}
	if len(errs) > 0 {
		t.Fatalf("the receiver could not read an export: %v", errs)
	}

	services := map[string]bool{}
	for _, s := range all {
		services[s.service] = true
		if got := hex.EncodeToString(s.TraceId); got != callerTrace {
			t.Errorf("%s span (%s) in trace %s, want the caller's %s", s.Name, s.service, got, callerTrace)
		}
	}
	if !services["trace-gateway"] || !services["trace-worker"] || len(services) != 2 {
		t.Errorf("spans from services %v, want trace-gateway and trace-worker", services)
	}
	server := byName["POST /v1/chat/completions"][0]
	if hex.EncodeToString(server.ParentSpanId) != callerSpan || server.service != "trace-gateway" || server.Kind != tracepb.Span_SPAN_KIND_SERVER {
		t.Errorf("server span: parent %x, service %s, kind %v; want the caller's %s, trace-gateway, server", server.ParentSpanId, server.service, server.Kind, callerSpan)
	}
	adm := byName[admission.SpanAdmission][0]
	q := byName[worker.SpanQueue][0]
	if !bytes.Equal(q.ParentSpanId, adm.SpanId) || q.service != "trace-worker" {
		t.Errorf("queue span: parent %x, service %s; want the admission span %x, trace-worker", q.ParentSpanId, q.service, adm.SpanId)
	}
	if got := q.durationMs(); got < queueMs-1 || got > queueMs+1 || queueMs < 300 {
		t.Errorf("queue span lasted %d ms (%d ns), X-Laas-Bridge-Queue-Ms is %d", got, q.EndTimeUnixNano-q.StartTimeUnixNano, queueMs)
	}
	call := byName[worker.SpanCall][0]
	if call.attr("http.response.status_code").GetIntValue() != 200 || call.attr(worker.AttrAttempt).GetIntValue() != 1 ||
		call.attr(worker.AttrRetry).GetBoolValue() || call.Kind != tracepb.Span_SPAN_KIND_CLIENT {
		t.Errorf("LaaS call span attributes %v, kind %v; want status 200, attempt 1, no retry, client", call.Attributes, call.Kind)
	}
	job := byName[worker.SpanJob][0]
	if !bytes.Equal(call.ParentSpanId, job.SpanId) || !bytes.Equal(byName[worker.SpanReply][0].ParentSpanId, job.SpanId) {
		t.Errorf("call and reply spans are not children of the job span")
	}
	wk.stop(t)
	gw.stop(t)
	t.Logf("trace %s: %d spans", callerTrace, len(all))
	for _, s := range all {
		t.Logf("  %-13s %-27s %6.2f ms  parent %x", s.service, s.Name, float64(s.EndTimeUnixNano-s.StartTimeUnixNano)/1e6, s.ParentSpanId)
	}
}

func spanNames[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
