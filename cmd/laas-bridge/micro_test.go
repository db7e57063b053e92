package main

import (
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/laas-bridge/laas-bridge/bridge"
	"github.com/laas-bridge/laas-bridge/schema"
)

// embeddedURL finds the embedded NATS server's client URL and the file of
// the nkey seed that signs in to it in the logs of `serve --nats-listen`.
var embeddedURL = regexp.MustCompile(`msg="embedded NATS started".* client_url=(\S+) nkey_seed_file=(\S+)`)

// servedNATS is the URL of the NATS port that serve's logs name and the
// nkey seed file to connect with.
func servedNATS(t *testing.T, logs string) (url, seedFile string) {
	t.Helper()
	m := embeddedURL.FindStringSubmatch(logs)
	if m == nil {
		t.Fatalf("no embedded NATS URL in the logs:\n%s", logs)
	}
	return m[1], m[2]
}

// seedOption signs in as the nkey user whose seed is in seedFile.
func seedOption(t *testing.T, seedFile string) nats.Option {
	t.Helper()
	opt, err := nats.NkeyOptionFromSeed(seedFile)
	if err != nil {
		t.Fatal(err)
	}
	return opt
}

// connectLogged connects to the embedded NATS server named in logs, with
// the seed named there.
func connectLogged(t *testing.T, logs string) *nats.Conn {
	t.Helper()
	url, seed := servedNATS(t, logs)
	nc, err := nats.Connect(url, seedOption(t, seed))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// TestServeDemoMicroProcess: `serve --demo`, as a process with a master key
// set, answers a plain nats.go request on laas.api.chat with the mock's
// chat.completion, refuses an unknown model with OpenAI's 404 body and
// micro's error headers, is discoverable through $SRV.INFO, and shows the
// master key nowhere.
func TestServeDemoMicroProcess(t *testing.T) {
	root, _ := filepath.Abs("../..")
	const key = "sk-micro-master-key"
	p, _ := startProc(t, "serve --demo", root, baseEnv("BRIDGE_MASTER_KEY="+key), gatewayReady,
		"serve", "--demo", "--listen", "127.0.0.1:0", "--nats-listen", "127.0.0.1:0", "--data-dir", t.TempDir())
	nc := connectLogged(t, p.logs.String())

	var seen []string
	rep, err := nc.Request("laas.api.chat", []byte(`{"model": "claude-3.5-sonnet", "messages": [{"role": "user", "content": "안녕하세요!"}]}`), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	seen = append(seen, string(rep.Data))
	var cc schema.ChatCompletion
	if err := json.Unmarshal(rep.Data, &cc); err != nil || rep.Header.Get(micro.ErrorCodeHeader) != "" ||
		cc.Object != "chat.completion" || cc.Model != "claude-3.5-sonnet" || cc.Choices[0].Message.Content != "mock[demo-preset]: 안녕하세요!" {
		t.Fatalf("answer (%v) %v: %s", err, rep.Header, rep.Data)
	}

	rep, err = nc.Request("laas.api.chat", []byte(`{"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]}`), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	seen = append(seen, string(rep.Data))
	want := `{"error":{"message":"The model 'gpt-4o' does not exist or you do not have access to it.","type":"invalid_request_error","param":"model","code":"model_not_found"}}`
	if string(rep.Data) != want || rep.Header.Get(micro.ErrorCodeHeader) != "404" ||
		rep.Header.Get(micro.ErrorHeader) != "The model 'gpt-4o' does not exist or you do not have access to it." {
		t.Errorf("unknown model: %v %s", rep.Header, rep.Data)
	}

	for _, verb := range []micro.Verb{micro.InfoVerb, micro.StatsVerb} {
		subj, _ := micro.ControlSubject(verb, bridge.MicroServiceName, "")
		m, err := nc.Request(subj, nil, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", subj, err)
		}
		seen = append(seen, string(m.Data))
		if verb == micro.InfoVerb {
			var info micro.Info
			_ = json.Unmarshal(m.Data, &info)
			if info.Version != "0.0.0-dev" || len(info.Endpoints) != 1 || info.Endpoints[0].Subject != "laas.api.chat" {
				t.Errorf("info: %s", m.Data)
			}
			continue
		}
		var stats micro.Stats
		_ = json.Unmarshal(m.Data, &stats)
		if len(stats.Endpoints) != 1 || stats.Endpoints[0].NumRequests != 2 || stats.Endpoints[0].NumErrors != 1 {
			t.Errorf("stats: %s", m.Data)
		}
	}
	p.stop(t)
	for _, s := range append(seen, p.logs.String()) {
		if strings.Contains(s, key) {
			t.Errorf("the master key shows in %.300s", s)
		}
	}
}

// TestMicroSubjectSetting: BRIDGE_MICRO_SUBJECT moves the endpoint, and
// "off" removes it.
func TestMicroSubjectSetting(t *testing.T) {
	t.Run("own subject", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("BRIDGE_MICRO_SUBJECT", "team.llm.chat")
		in := startDemo(t, "--nats-listen", "127.0.0.1:0")
		nc := connectLogged(t, in.logs.String())
		rep, err := nc.Request("team.llm.chat", []byte(chatBody("claude-3.5-sonnet", "hi")), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(rep.Data), `"content":"mock[demo-preset]: hi"`) {
			t.Fatalf("answer: %s", rep.Data)
		}
		if _, err := nc.Request("laas.api.chat", []byte(chatBody("claude-3.5-sonnet", "hi")), time.Second); err != nats.ErrNoResponders {
			t.Errorf("default subject: %v, want no responders", err)
		}
	})
	t.Run("off", func(t *testing.T) {
		clearEnv(t)
		t.Setenv("BRIDGE_MICRO_SUBJECT", "off")
		in := startDemo(t, "--nats-listen", "127.0.0.1:0")
		nc := connectLogged(t, in.logs.String())
		subj, _ := micro.ControlSubject(micro.PingVerb, bridge.MicroServiceName, "")
		if _, err := nc.Request(subj, nil, time.Second); err != nats.ErrNoResponders {
			t.Errorf("ping: %v, want no responders", err)
		}
		if _, err := nc.Request("laas.api.chat", []byte(chatBody("claude-3.5-sonnet", "hi")), time.Second); err != nats.ErrNoResponders {
			t.Errorf("chat: %v, want no responders", err)
		}
	})
}

func TestMicroConfigVersion(t *testing.T) {
	for in, want := range map[string]string{"dev": "0.0.0-dev", "v1.4.0": "1.4.0", "1.4.0-rc.1+abc": "1.4.0-rc.1+abc", "main": "0.0.0-dev", "": "0.0.0-dev"} {
		if got := microConfig("laas.api.chat", "", in).Version; got != want {
			t.Errorf("version %q -> %q, want %q", in, got, want)
		}
	}
	if !microConfig("OFF", "", "dev").Disabled || microConfig("laas.api.chat", "", "dev").Disabled {
		t.Error("only \"off\" turns the endpoint off")
	}
}

// TestMicroIdempotencyKey: an Idempotency-Key works over NATS as over HTTP,
// and across both: one key and one body make one LaaS call, whichever way
// the retries come.
func TestMicroIdempotencyKey(t *testing.T) {
	mock, in := serveWithMock(t, 300*time.Millisecond, "--nats-listen", "127.0.0.1:0")
	nc := connectLogged(t, in.logs.String())
	type answer struct {
		id, content, replayed, errCode string
	}
	ask := func(key, text string) answer {
		msg := nats.NewMsg("laas.api.chat")
		msg.Data = []byte(chatBody("claude-3.5-sonnet", text))
		msg.Header.Set("Idempotency-Key", key)
		rep, err := nc.RequestMsg(msg, time.Minute)
		if err != nil {
			t.Error(err)
			return answer{}
		}
		var cc schema.ChatCompletion
		_ = json.Unmarshal(rep.Data, &cc)
		a := answer{id: cc.ID, replayed: rep.Header.Get("Idempotent-Replayed"), errCode: rep.Header.Get(micro.ErrorCodeHeader)}
		if len(cc.Choices) > 0 {
			a.content = cc.Choices[0].Message.Content
		}
		return a
	}
	answers := make([]answer, 3)
	done := make(chan struct{})
	for i := range answers {
		go func() { answers[i] = ask("order-7", "once only"); done <- struct{}{} }()
	}
	for range answers {
		<-done
	}
	later := ask("order-7", "once only")
	for i, a := range append(answers, later) {
		if a.errCode != "" || a.content != "mock[h]: once only" || a.id != answers[0].id || a.id == "" {
			t.Errorf("answer %d = %+v; want the first call's answer (id %s)", i, a, answers[0].id)
		}
	}
	if later.replayed != "true" {
		t.Errorf("a retry after the first finished is not marked Idempotent-Replayed: %+v", later)
	}
	// The same key and body over HTTP get the same answer.
	req, _ := http.NewRequest("POST", in.url+"/v1/chat/completions", strings.NewReader(chatBody("claude-3.5-sonnet", "once only")))
	req.Header.Set("Idempotency-Key", "order-7")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"id":"`+answers[0].id+`"`) {
		t.Errorf("over HTTP: %d %s", resp.StatusCode, b)
	}
	if mock.Calls() != 1 {
		t.Errorf("LaaS calls = %d, want 1 for one Idempotency-Key", mock.Calls())
	}
}
