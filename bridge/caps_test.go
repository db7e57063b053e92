package bridge

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/laas-bridge/laas-bridge/schema"
)

// TestJobWatchersCap: at most MaxJobWatchers long polls wait at once; one
// more gets 503 server_overloaded with Retry-After at once, a GET without
// ?wait= is still answered, and a finished long poll frees its place.
func TestJobWatchersCap(t *testing.T) {
	f := newFixture(t, Config{MaxJobWatchers: 1})
	resp, body := f.do(t, "POST", "/v1/queue/jobs", chatBody("claude-3.5-sonnet", "watched"))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("POST: %d %s", resp.StatusCode, body)
	}
	id := decodeJob(t, body).ID
	polled := make(chan int, 1)
	go func() {
		resp, err := http.Get(f.srv.URL + "/v1/queue/jobs/" + id + "?wait=60s")
		if err != nil {
			polled <- 0
			return
		}
		resp.Body.Close()
		polled <- resp.StatusCode
	}()
	for start := time.Now(); f.gw.watchers.Load() != 1; time.Sleep(5 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the first long poll never waited")
		}
	}
	resp, body = f.do(t, "GET", "/v1/queue/jobs/"+id+"?wait=60s", "")
	wantOverloaded(t, resp, body)
	if resp, body := f.do(t, "GET", "/v1/queue/jobs/"+id, ""); resp.StatusCode != 200 {
		t.Fatalf("GET without wait: %d %s", resp.StatusCode, body)
	}
	f.runOneJob(t, echoAnswer)
	if status := <-polled; status != 200 {
		t.Fatalf("first long poll: %d", status)
	}
	if n := f.gw.watchers.Load(); n != 0 {
		t.Fatalf("%d long polls still counted", n)
	}
	if resp, body := f.do(t, "GET", "/v1/queue/jobs/"+id+"?wait=60s", ""); resp.StatusCode != 200 || decodeJob(t, body).Status != schema.JobSucceeded {
		t.Fatalf("long poll after the first ended: %d %s", resp.StatusCode, body)
	}
}

// TestMicroInFlightCap: the NATS endpoint answers at most
// MicroConfig.MaxInFlight callers at once; one more gets a 503
// server_overloaded error reply (micro's error headers, Retry-After)
// at once, and a place freed by an answer is taken again.
func TestMicroInFlightCap(t *testing.T) {
	const n = 2
	f, nc := serveFixture(t, Config{Micro: MicroConfig{MaxInFlight: n}})
	replies := make(chan *nats.Msg, n)
	for range n {
		go func() {
			msg := nats.NewMsg(DefaultMicroSubject)
			msg.Data = []byte(chatBody("claude-3.5-sonnet", "in flight"))
			rep, err := nc.RequestMsg(msg, time.Minute)
			if err != nil {
				t.Errorf("request: %v", err)
			}
			replies <- rep
		}()
	}
	for start := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		info, err := f.q.Consumer.Info(context.Background())
		if err == nil && info.NumPending == n {
			break
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("only %d of %d requests queued", info.NumPending, n)
		}
	}
	rep := ask(t, nc, chatBody("claude-3.5-sonnet", "one too many"))
	var e struct{ Error schema.ErrorDetail }
	_ = json.Unmarshal(rep.Data, &e)
	if rep.Header.Get(micro.ErrorCodeHeader) != "503" || e.Error.Code == nil || *e.Error.Code != CodeServerOverloaded ||
		rep.Header.Get("Retry-After") != "1" || !strings.Contains(rep.Header.Get(micro.ErrorHeader), "NATS callers") {
		t.Fatalf("over the cap: headers %v body %s", rep.Header, rep.Data)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f.fakeWorker(t, ctx, n, echoAnswer)
	for range n {
		if r := <-replies; r == nil || r.Header.Get(micro.ErrorCodeHeader) != "" {
			t.Fatalf("a caller within the cap: %v", r)
		}
	}
	if rep := ask(t, nc, chatBody("claude-3.5-sonnet", "room again")); rep.Header.Get(micro.ErrorCodeHeader) != "" {
		t.Fatalf("after the answers: %s %s", rep.Header.Get(micro.ErrorHeader), rep.Data)
	}
}
