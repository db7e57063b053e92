// Command nats-producer submits one job to laas-bridge over NATS, with
// nothing but nats.go, and prints its answer (see docs/queue-contract.md,
// "Direct queue API"). Run it against `laas-bridge serve --demo`.
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
	url := os.Getenv("NATS_URL") // `laas-bridge serve` listens on nats://127.0.0.1:4222
	if url == "" {
		url = nats.DefaultURL
	}
	nc, err := nats.Connect(url)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	// 1. Publish the job where programs submit jobs; Nats-Msg-Id = job id.
	// The bridge checks it as it checks an HTTP request, then queues it.
	id := "order-42-summary" // 1-64 of [A-Za-z0-9_-]; a job id is answered once
	env, _ := json.Marshal(map[string]any{
		"id": id, "model": "claude-3.5-sonnet", "job": true,
		"enqueued_at":     time.Now().UTC(),
		"results_subject": "laas.results.myapp." + id, // optional; default laas.results.<id>
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
	cons, err := js.OrderedConsumer(ctx, "LAAS_RESULTS", jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"laas.results.myapp." + id}})
	if err != nil {
		log.Fatal(err)
	}
	msg, err := cons.Next(jetstream.FetchMaxWait(time.Minute))
	if err != nil {
		log.Fatal(err)
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
