package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// TestContainersNATSIdentities: the NATS image with its nats.conf, a
// gateway and a worker container connected as their own users, the mock
// as LaaS. From the host: an anonymous client and a wrong password are
// refused; the producer identity submits a job as examples/nats-producer
// does, reads its own result, and calls the micro endpoint; it cannot read
// LAAS_BODIES, LAAS_FILES or LAAS_ANSWERS, publish laas.cancel.x, or do
// the rest checkProducerDenied lists, each refused with the exact
// permissions violation. Gateway and worker did their work without one.
func TestContainersNATSIdentities(t *testing.T) {
	s := newStack(t, 1, "0s")
	s.addGateway()
	s.addWorker(2)
	ep, err := s.nats[0].PortEndpoint(context.Background(), "4222/tcp", "")
	if err != nil {
		t.Fatal(err)
	}
	hostport := strings.TrimPrefix(ep, "://")
	checkAnonymousRefused(t, hostport)

	nc, errs := connectAs(t, hostport, "producer", s.natsPW["NATS_PRODUCER_PASSWORD"])
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// A job, as examples/nats-producer submits it.
	id := fmt.Sprintf("ids-%d", time.Now().UnixNano())
	env, _ := json.Marshal(schema.Envelope{
		ID: id, Model: "claude-3.5-sonnet", Job: true, EnqueuedAt: time.Now().UTC(),
		ResultsSubject: "laas.results.producer." + id,
		Request:        json.RawMessage(`{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"as producer"}]}`),
	})
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: schema.SubjectSubmit, Data: env, Header: nats.Header{schema.HeaderMsgID: []string{id}}}); err != nil {
		t.Fatalf("producer: submit job: %v", err)
	}
	data, err := readResult(ctx, js, id)
	if err != nil {
		t.Fatalf("producer: read its result: %v", err)
	}
	var res schema.JobResult
	if err := json.Unmarshal(data, &res); err != nil {
		t.Fatal(err)
	}
	if res.Status != schema.JobSucceeded || res.ID != id || !strings.Contains(string(data), `"content":"mock[h]: as producer"`) {
		t.Fatalf("producer: result %s", data)
	}
	t.Logf("producer: job %s %s, its result read through consumer \"producer\"", id, res.Status)

	// The micro endpoint answers in the producer's own inbox.
	m, err := nc.RequestWithContext(ctx, "laas.api.chat", []byte(`{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":"micro"}]}`))
	if err != nil || !strings.Contains(string(m.Data), `"content":"mock[h]: micro"`) {
		t.Fatalf("producer: laas.api.chat: %v %v", m, err)
	}

	checkProducerDenied(t, nc, errs)

	// Every violation in the server's log is the producer's (the ones
	// above): gateway and worker needed nothing they were not granted.
	for _, line := range strings.Split(s.logs(s.nats[0]), "\n") {
		if strings.Contains(line, "Violation") && !strings.Contains(line, "user:producer") && !strings.Contains(line, "Authorization Violation") {
			t.Errorf("NATS log: %s", line)
		}
	}
}
