// Command nats-producer submits one job to laas-bridge over NATS, with
// nothing but nats.go, and prints its answer (see docs/queue-contract.md,
// "Direct queue API"). Run it against `laas-bridge serve --demo` started
// with BRIDGE_NATS_LISTEN (with the NATS_NKEY_SEED and NATS_URL it logs),
// or as the "producer" identity of deploy/nats/nats.conf (docs/deploy.md, "NATS
// identities and permissions"):
//
//	NATS_URL=nats://producer:<password>@127.0.0.1:4222 go run ./examples/nats-producer
//
// An app connects as itself, as laas-bridge's own commands do: a
// user:password in NATS_URL, NATS_CREDS (a creds file) or NATS_NKEY_SEED
// (an nkey seed file, as `serve` with BRIDGE_NATS_LISTEN writes and logs),
// NATS_CA (the servers' CA bundle), NATS_CERT and NATS_KEY (a client
// certificate for mutual TLS). APP names it (default "producer"): its inbox
// prefix _INBOX.<app>, its results subjects laas.results.<app>.<job id>
// and its results consumer <app> are the ones its identity may use.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

func main() {
	url := os.Getenv("NATS_URL")
	if url == "" {
		url = nats.DefaultURL
	}
	app := os.Getenv("APP")
	if app == "" {
		app = "producer"
	}
	// Replies (the stream's acks, results fetched) come to the app's own
	// inbox prefix: other apps cannot read them, nor it theirs.
	opts, err := identity()
	if err != nil {
		log.Fatal(err)
	}
	opts = append(opts, nats.Name(app), nats.CustomInboxPrefix("_INBOX."+app))
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		log.Fatal(err) // nats.go's errors never hold the password or the seed
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// 1. Publish the job where programs submit jobs; Nats-Msg-Id = job id.
	// The bridge checks it as it checks an HTTP request, then queues it.
	// 1-64 of [A-Za-z0-9_-]; a job id is answered once
	id := fmt.Sprintf("summary-%d", time.Now().UnixNano())
	env, _ := json.Marshal(map[string]any{
		"id": id, "model": "claude-3.5-sonnet", "job": true,
		"enqueued_at":     time.Now().UTC(),
		"results_subject": "laas.results." + app + "." + id, // the app's namespace (default laas.results.<id>)
		"request": map[string]any{"model": "claude-3.5-sonnet",
			"messages": []map[string]string{{"role": "user", "content": "안녕하세요!"}}},
	})
	ack, err := js.PublishMsg(ctx, &nats.Msg{Subject: "laas.requests.batch", Data: env,
		Header: nats.Header{"Nats-Msg-Id": []string{id}}})
	if err != nil {
		log.Fatal(err) // e.g. the queue is full: try again later
	}
	fmt.Println("queued, seq", ack.Sequence, "duplicate", ack.Duplicate)

	// 2. Collect the result, now or hours later: it stays in LAAS_RESULTS.
	// The app's one consumer (named after it, on its own results subjects)
	// hands each of its results over once; results of its other jobs are
	// acknowledged and skipped here.
	cons, err := js.CreateOrUpdateConsumer(ctx, "LAAS_RESULTS", jetstream.ConsumerConfig{
		Name: app, FilterSubject: "laas.results." + app + ".>",
		AckPolicy: jetstream.AckExplicitPolicy, InactiveThreshold: 24 * time.Hour})
	if err != nil {
		log.Fatal(err)
	}
	var msg jetstream.Msg
	for msg == nil || msg.Subject() != "laas.results."+app+"."+id {
		if msg, err = cons.Next(jetstream.FetchContext(ctx)); err != nil {
			log.Fatal(err)
		}
		_ = msg.Ack()
	}
	var res struct {
		Status     string `json:"status"`      // succeeded, failed, cancelled
		StatusCode int    `json:"status_code"` // 200, or the error's HTTP status
		Completion *struct {
			Choices []struct {
				Message struct{ Content string } `json:"message"`
			} `json:"choices"`
		} `json:"completion"`
		Error *struct{ Message, Code string } `json:"error"`
	}
	if err := json.Unmarshal(msg.Data(), &res); err != nil {
		log.Fatal(err)
	}
	if res.Status != "succeeded" {
		log.Fatalf("job %s: %d %+v", res.Status, res.StatusCode, res.Error)
	}
	fmt.Println(res.Completion.Choices[0].Message.Content)
}

// identity is the nats.go options for the NATS_* variables that are set.
func identity() ([]nats.Option, error) {
	var opts []nats.Option
	if f := os.Getenv("NATS_CREDS"); f != "" {
		opts = append(opts, nats.UserCredentials(f))
	}
	if f := os.Getenv("NATS_NKEY_SEED"); f != "" {
		o, err := nats.NkeyOptionFromSeed(f)
		if err != nil {
			return nil, fmt.Errorf("NATS_NKEY_SEED %s: %w", f, err)
		}
		opts = append(opts, o)
	}
	if f := os.Getenv("NATS_CA"); f != "" {
		opts = append(opts, nats.RootCAs(f))
	}
	cert, key := os.Getenv("NATS_CERT"), os.Getenv("NATS_KEY")
	if (cert == "") != (key == "") {
		return nil, fmt.Errorf("set both NATS_CERT and NATS_KEY, or neither")
	}
	if cert != "" {
		opts = append(opts, nats.ClientCert(cert, key))
	}
	return opts, nil
}
