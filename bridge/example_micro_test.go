package bridge_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"
)

// A Go program that waits for an answer over NATS (the example in docs/api.md,
// "Waiting over NATS: the micro endpoint").
func Example_natsRequestReply() {
	// As the app's own NATS user (deploy/nats/nats.conf), with its own
	// inbox prefix. Against `laas-bridge serve` started with
	// BRIDGE_NATS_LISTEN, sign in with the nkey seed it writes instead:
	// nats.NkeyOptionFromSeed("data/nats-user.nk").
	nc, err := nats.Connect("nats://producer:"+os.Getenv("NATS_PRODUCER_PASSWORD")+"@nats:4222", nats.CustomInboxPrefix("_INBOX.producer"))
	if err != nil {
		panic(err)
	}
	defer nc.Close()

	msg := nats.NewMsg("laas.api.chat")
	msg.Header.Set("X-Request-Timeout", "120") // seconds; default: the model's timeout
	msg.Data = []byte(`{"model": "claude-3.5-sonnet", "messages": [{"role": "user", "content": "안녕하세요!"}]}`)
	rep, err := nc.RequestMsg(msg, 125*time.Second) // a little longer than the bridge waits
	if err != nil {
		panic(err) // nats.ErrNoResponders: no gateway is running; nats.ErrTimeout
	}
	if status := rep.Header.Get(micro.ErrorCodeHeader); status != "" { // the HTTP status
		fmt.Printf("error %s: %s\n%s\n", status, rep.Header.Get(micro.ErrorHeader), rep.Data) // rep.Data: OpenAI's error body
		return
	}
	if ref := rep.Header.Get("Laas-Bridge-Completion-Ref"); ref != "" { // too large for a NATS message
		ctx := context.Background()
		js, _ := jetstream.New(nc)
		store, err := js.ObjectStore(ctx, "LAAS_BODIES")
		if err == nil {
			rep.Data, err = store.GetBytes(ctx, ref)
		}
		if err != nil {
			panic(err)
		}
		_ = store.Delete(ctx, ref)
	}
	var cc struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
	}
	if err := json.Unmarshal(rep.Data, &cc); err != nil {
		panic(err)
	}
	fmt.Println(cc.Choices[0].Message.Content)
}
