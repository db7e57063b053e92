package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
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

// jsz is the part of a NATS server's /jsz this test reads.
type jsz struct {
	MetaCluster *struct {
		Leader string `json:"leader"`
	} `json:"meta_cluster"`
	AccountDetails []struct {
		Streams []struct {
			Name   string `json:"name"`
			Config struct {
				Replicas int `json:"num_replicas"`
			} `json:"config"`
			Cluster struct {
				Leader string `json:"leader"`
			} `json:"cluster"`
		} `json:"stream_detail"`
	} `json:"account_details"`
}

func (s *cstack) jsz(node int) (jsz, error) {
	var j jsz
	ep, err := s.nats[node].PortEndpoint(context.Background(), "8222/tcp", "http")
	if err != nil {
		return j, err
	}
	resp, err := http.Get(ep + "/jsz?streams=true&config=true")
	if err != nil {
		return j, err
	}
	defer resp.Body.Close()
	return j, json.NewDecoder(resp.Body).Decode(&j)
}

// waitJetStream waits for a JetStream meta leader: before there is one,
// the stream cannot be created and gateways and workers would exit.
func (s *cstack) waitJetStream() {
	s.t.Helper()
	if len(s.nats) == 1 {
		return
	}
	deadline := time.Now().Add(time.Minute)
	for {
		j, err := s.jsz(0)
		if err == nil && j.MetaCluster != nil && j.MetaCluster.Leader != "" {
			s.t.Logf("NATS cluster of %d: JetStream meta leader %s", len(s.nats), j.MetaCluster.Leader)
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("no JetStream meta leader within a minute: %+v %v", j, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// streamLeader reports the request stream's leader and its replica count.
func (s *cstack) streamLeader() (string, int) {
	s.t.Helper()
	for node := range s.nats {
		j, err := s.jsz(node)
		if err != nil {
			continue
		}
		for _, a := range j.AccountDetails {
			for _, st := range a.Streams {
				if st.Name == schema.StreamRequests {
					return st.Cluster.Leader, st.Config.Replicas
				}
			}
		}
	}
	s.t.Fatalf("no NATS node reports the %s stream", schema.StreamRequests)
	return "", 0
}
