package deploy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/schema"
)

// The identities of nats/nats.conf, and the environment variables that
// hold their passwords (on the NATS server, and in compose's .env).
var natsUsers = map[string]string{
	"gateway":  "NATS_GATEWAY_PASSWORD",
	"worker":   "NATS_WORKER_PASSWORD",
	"producer": "NATS_PRODUCER_PASSWORD",
	"admin":    "NATS_ADMIN_PASSWORD",
}

// natsPasswords makes a password per identity: 32 random bytes in hex, as
// docs/deploy.md says to make them (`openssl rand -hex 32`).
func natsPasswords(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	// and one for the cluster's routes (not a user of nats.conf)
	for _, v := range append(values(natsUsers), "NATS_ROUTE_PASSWORD") {
		b := make([]byte, 32)
		_, _ = rand.Read(b)
		env[v] = hex.EncodeToString(b)
	}
	// A password the config parser could take for a number must stay a
	// string (nats-server parses what it reads from the environment).
	env["NATS_WORKER_PASSWORD"] = "1234e5" + env["NATS_WORKER_PASSWORD"][6:]
	return env
}

// natsURL is url with user:password.
func natsURL(hostport, user, password string) string {
	return (&url.URL{Scheme: "nats", User: url.UserPassword(user, password), Host: hostport}).String()
}

// errSent stands for "published": whether the server took it shows later.
var errSent = errors.New("published")

// asyncErrs collects a connection's asynchronous errors: a permissions
// violation comes that way (and a JetStream call it stopped just times out).
type asyncErrs chan error

func (e asyncErrs) handler(_ *nats.Conn, _ *nats.Subscription, err error) {
	select {
	case e <- err:
	default:
	}
}

// connectAs connects as user; the producer with its own inbox prefix.
func connectAs(t *testing.T, hostport, user, password string) (*nats.Conn, asyncErrs) {
	t.Helper()
	errs := make(asyncErrs, 64)
	opts := []nats.Option{nats.Name("test " + user), nats.ErrorHandler(errs.handler), nats.Timeout(10 * time.Second)}
	if user == "producer" {
		opts = append(opts, nats.CustomInboxPrefix("_INBOX.producer"))
	}
	nc, err := nats.Connect(natsURL(hostport, user, password), opts...)
	if err != nil {
		t.Fatalf("connect as %s: %v", user, err)
	}
	t.Cleanup(nc.Close)
	return nc, errs
}

// denied runs do, which the server must refuse, and waits (10 s at most)
// for the connection's permissions violation naming want: `Publish to
// "<subject>"` or `Subscription to "<subject>"`.
func denied(t *testing.T, nc *nats.Conn, errs asyncErrs, what, want string, do func(ctx context.Context) error) {
	t.Helper()
	for len(errs) > 0 {
		<-errs
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := do(ctx); err == nil {
		t.Errorf("%s: succeeded, want a permissions violation", what)
		return
	}
	_ = nc.FlushTimeout(5 * time.Second)
	full := fmt.Sprintf("nats: permissions violation: Permissions Violation for %s", want)
	timeout := time.After(10 * time.Second)
	for {
		select {
		case err := <-errs:
			if errors.Is(err, nats.ErrPermissionViolation) && err.Error() == full {
				return
			}
			t.Logf("%s: (other async error) %v", what, err)
		case <-timeout:
			t.Errorf("%s: no %q within 10 s", what, full)
			return
		}
	}
}

// checkAnonymousRefused: a client without credentials, and one with a
// wrong password, are refused.
func checkAnonymousRefused(t *testing.T, hostport string) {
	t.Helper()
	for name, u := range map[string]string{
		"anonymous":      "nats://" + hostport,
		"wrong password": natsURL(hostport, "producer", "not-the-password"),
		"unknown user":   natsURL(hostport, "nobody", "x"),
	} {
		nc, err := nats.Connect(u, nats.Timeout(10*time.Second), nats.MaxReconnects(0))
		if err == nil {
			nc.Close()
			t.Errorf("%s: connected, want nats: authorization violation", name)
		} else if !errors.Is(err, nats.ErrAuthorization) {
			t.Errorf("%s: %v, want nats: authorization violation", name, err)
		}
	}
}

// checkProducerDenied: what the producer identity must not do, each
// refused with a permissions violation naming the subject.
func checkProducerDenied(t *testing.T, nc *nats.Conn, errs asyncErrs) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// A refused publish is refused asynchronously: denied waits for it.
	pub := func(subject string) func(context.Context) error {
		return func(ctx context.Context) error {
			if err := nc.Publish(subject, []byte("x")); err != nil {
				return err
			}
			return errSent
		}
	}
	for _, c := range []struct{ what, want string }{
		{"cancel someone's job", `laas.cancel.x`},
		{"forge a reply", `laas.reply.gw.x`},
		{"forge a direct reply", `laas.direct.gw.x`},
		{"skip the admission door", `laas.requests.lane.batch`},
		{"write a result", `laas.results.producer.x`},
		{"write a key-value entry", `$KV.LAAS_ANSWERS.x`},
	} {
		denied(t, nc, errs, c.what, `Publish to "`+c.want+`"`, pub(c.want))
	}
	for _, c := range []struct{ what, want string }{
		{"every inbox", `_INBOX.>`},
		{"another app's inbox", `_INBOX.other.>`},
		{"another app's results", `laas.results.other.>`},
		{"every result", `laas.results.>`},
		{"cancellations", `laas.cancel.>`},
		{"replies", `laas.reply.>`},
	} {
		denied(t, nc, errs, "subscribe to "+c.what, `Subscription to "`+c.want+`"`, func(ctx context.Context) error {
			sub, err := nc.SubscribeSync(c.want)
			if err != nil {
				return err
			}
			defer sub.Unsubscribe()
			_, err = sub.NextMsgWithContext(ctx)
			return err
		})
	}
	for _, c := range []struct {
		what, want string
		do         func(ctx context.Context) error
	}{
		{"read LAAS_BODIES", `$JS.API.STREAM.INFO.OBJ_LAAS_BODIES`, func(ctx context.Context) error {
			_, err := js.ObjectStore(ctx, schema.BucketBodies)
			return err
		}},
		{"read LAAS_FILES", `$JS.API.STREAM.INFO.OBJ_LAAS_FILES`, func(ctx context.Context) error {
			_, err := js.ObjectStore(ctx, schema.BucketFiles)
			return err
		}},
		{"get from LAAS_ANSWERS", `$JS.API.DIRECT.GET.KV_LAAS_ANSWERS.$KV.LAAS_ANSWERS.k`, func(ctx context.Context) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.DIRECT.GET.KV_LAAS_ANSWERS.$KV.LAAS_ANSWERS.k", nil)
			return err
		}},
		{"open LAAS_ANSWERS", `$JS.API.STREAM.INFO.KV_LAAS_ANSWERS`, func(ctx context.Context) error {
			_, err := js.KeyValue(ctx, schema.BucketAnswers)
			return err
		}},
		{"open LAAS_JOBS", `$JS.API.STREAM.INFO.KV_LAAS_JOBS`, func(ctx context.Context) error {
			_, err := js.KeyValue(ctx, schema.BucketJobs)
			return err
		}},
		{"get a body's chunks", `$JS.API.CONSUMER.CREATE.OBJ_LAAS_BODIES.c.$O.LAAS_BODIES.C.>`, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateConsumer(ctx, "OBJ_"+schema.BucketBodies, jetstream.ConsumerConfig{Name: "c", FilterSubject: "$O.LAAS_BODIES.C.>"})
			return err
		}},
		{"read a stored message", `$JS.API.STREAM.MSG.GET.LAAS_REQUESTS`, func(ctx context.Context) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.LAAS_REQUESTS", []byte(`{"seq":1}`))
			return err
		}},
		{"read every result", `$JS.API.CONSUMER.CREATE.LAAS_RESULTS.producer.laas.results.>`, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateConsumer(ctx, schema.StreamResults, jetstream.ConsumerConfig{Name: "producer", FilterSubject: "laas.results.>"})
			return err
		}},
		{"read another app's results", `$JS.API.CONSUMER.CREATE.LAAS_RESULTS.other.laas.results.other.>`, func(ctx context.Context) error {
			_, err := js.CreateOrUpdateConsumer(ctx, schema.StreamResults, jetstream.ConsumerConfig{Name: "other", FilterSubject: "laas.results.other.>"})
			return err
		}},
		{"pull another app's consumer", `$JS.API.CONSUMER.MSG.NEXT.LAAS_RESULTS.other`, func(ctx context.Context) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.CONSUMER.MSG.NEXT.LAAS_RESULTS.other", []byte(`{"batch":1}`))
			return err
		}},
		{"purge the queue", `$JS.API.STREAM.PURGE.LAAS_REQUESTS`, func(ctx context.Context) error {
			_, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.PURGE.LAAS_REQUESTS", nil)
			return err
		}},
		{"delete the queue", `$JS.API.STREAM.DELETE.LAAS_REQUESTS`, func(ctx context.Context) error {
			return js.DeleteStream(ctx, schema.StreamRequests)
		}},
	} {
		denied(t, nc, errs, c.what, `Publish to "`+c.want+`"`, c.do)
	}
}

// readResult reads the producer's result of job id from LAAS_RESULTS, as
// examples/nats-producer does: through the one consumer its identity may
// create, named after it, on its own results subjects.
func readResult(ctx context.Context, js jetstream.JetStream, id string) ([]byte, error) {
	cons, err := js.CreateOrUpdateConsumer(ctx, schema.StreamResults, jetstream.ConsumerConfig{
		Name: "producer", FilterSubject: "laas.results.producer.>", AckPolicy: jetstream.AckExplicitPolicy, InactiveThreshold: time.Hour,
	})
	if err != nil {
		return nil, fmt.Errorf("create the results consumer: %w", err)
	}
	for ctx.Err() == nil {
		msg, err := cons.Next(jetstream.FetchContext(ctx))
		if err != nil {
			return nil, err
		}
		_ = msg.Ack()
		if msg.Subject() == "laas.results.producer."+id {
			return msg.Data(), nil
		}
	}
	return nil, ctx.Err()
}

// startConfigured runs nats-server in-process with nats/nats.conf and env
// as its environment, JetStream in a temp dir, on a free port.
func startConfigured(t *testing.T, env map[string]string) *server.Server {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	opts, err := server.ProcessConfigFile("nats/nats.conf")
	if err != nil {
		t.Fatalf("nats/nats.conf: %v", err)
	}
	opts.Host, opts.Port, opts.HTTPPort = "127.0.0.1", -1, 0
	opts.JetStream, opts.StoreDir = true, t.TempDir()
	opts.NoLog, opts.NoSigs = true, true
	s, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	go s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready in 10 s")
	}
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	return s
}

// TestNATSConfigIdentities runs nats-server with nats/nats.conf in-process:
// anonymous and wrong passwords are refused; gateway and worker each
// provision every stream and bucket (queue.Ensure, as at start) but cannot
// delete or purge the queue; the producer submits a job and reads its
// result through its own consumer, and is refused everything else it
// tries. TestContainersNATSIdentities runs the same checks against the
// NATS image, with gateway and worker containers answering.
func TestNATSConfigIdentities(t *testing.T) {
	pw := natsPasswords(t)
	s := startConfigured(t, pw)
	hostport := strings.TrimPrefix(s.ClientURL(), "nats://")
	checkAnonymousRefused(t, hostport)

	log := slog.New(slog.DiscardHandler)
	for _, role := range []string{"gateway", "worker"} {
		nc, errs := connectAs(t, hostport, role, pw[natsUsers[role]])
		js, _ := jetstream.New(nc)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if _, err := queue.Ensure(ctx, js, queue.Config{Memory: true}, queue.WithLogger(log)); err != nil {
			t.Errorf("%s: queue.Ensure: %v", role, err)
		}
		cancel()
		denied(t, nc, errs, role+": delete the queue", `Publish to "$JS.API.STREAM.DELETE.LAAS_REQUESTS"`, func(ctx context.Context) error {
			return js.DeleteStream(ctx, schema.StreamRequests)
		})
		denied(t, nc, errs, role+": purge the queue", `Publish to "$JS.API.STREAM.PURGE.LAAS_REQUESTS"`, func(ctx context.Context) error {
			st, err := js.Stream(ctx, schema.StreamRequests)
			if err != nil {
				return err
			}
			return st.Purge(ctx)
		})
		// The response cache is the gateways' alone: they read and store
		// answers; a worker has no business there.
		if role == "gateway" {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			kv, err := js.KeyValue(ctx, schema.BucketCache)
			if err == nil {
				_, err = kv.Create(ctx, "k", []byte(`{}`), jetstream.KeyTTL(time.Minute))
			}
			if err == nil {
				_, err = kv.Get(ctx, "k")
			}
			cancel()
			if err != nil {
				t.Errorf("gateway: store and read a cached answer: %v", err)
			}
		} else {
			denied(t, nc, errs, "worker: store a cached answer", `Publish to "$KV.LAAS_CACHE.forged"`, func(ctx context.Context) error {
				kv, err := js.KeyValue(ctx, schema.BucketCache)
				if err != nil {
					return err
				}
				_, err = kv.Create(ctx, "forged", []byte(`{}`))
				return err
			})
		}
		if role == "worker" { // workers read keys; only gateways write them
			denied(t, nc, errs, "worker: write a virtual key", `Publish to "$KV.LAAS_KEYS.forged"`, func(ctx context.Context) error {
				kv, err := js.KeyValue(ctx, schema.BucketKeys)
				if err != nil {
					return err
				}
				_, err = kv.Put(ctx, "forged", []byte(`{}`))
				return err
			})
		}
	}

	prod, errs := connectAs(t, hostport, "producer", pw["NATS_PRODUCER_PASSWORD"])
	pjs, _ := jetstream.New(prod)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	// A job submitted: the stream's ack comes back to the producer's inbox.
	ack, err := pjs.PublishMsg(ctx, &nats.Msg{Subject: schema.SubjectSubmit, Data: []byte(`{}`), Header: nats.Header{schema.HeaderMsgID: []string{"job-1"}}})
	if err != nil || ack.Stream != schema.StreamRequests {
		t.Fatalf("producer: submit: %+v %v", ack, err)
	}
	// A worker's result on the producer's results subject, read back.
	wnc, _ := connectAs(t, hostport, "worker", pw["NATS_WORKER_PASSWORD"])
	wjs, _ := jetstream.New(wnc)
	if _, err := wjs.Publish(ctx, "laas.results.producer.job-1", []byte(`{"id":"job-1"}`)); err != nil {
		t.Fatalf("worker: publish a result: %v", err)
	}
	got, err := readResult(ctx, pjs, "job-1")
	if err != nil || string(got) != `{"id":"job-1"}` {
		t.Fatalf("producer: read its result: %q %v", got, err)
	}
	checkProducerDenied(t, prod, errs)
}

// TestNATSRoutesLogIn: a node started as compose starts it (nats.conf, the
// cluster URL with the route user and NATS_ROUTE_PASSWORD) takes a route
// only with that password: a node with another one never joins, one with
// it does.
func TestNATSRoutesLogIn(t *testing.T) {
	pw := natsPasswords(t)
	for k, v := range pw {
		t.Setenv(k, v)
	}
	node := func(name, routePW string, routes ...string) *server.Server {
		opts, err := server.ProcessConfigFile("nats/nats.conf")
		if err != nil {
			t.Fatal(err)
		}
		opts.ServerName, opts.Host, opts.Port, opts.NoLog, opts.NoSigs = name, "127.0.0.1", -1, true, true
		opts.Cluster.Name, opts.Cluster.Host, opts.Cluster.Port = "laas", "127.0.0.1", -1
		opts.Cluster.Username, opts.Cluster.Password = "route", pw["NATS_ROUTE_PASSWORD"]
		for _, r := range routes {
			u, _ := url.Parse(natsURL(r, "route", routePW))
			opts.Routes = append(opts.Routes, u)
		}
		s, err := server.NewServer(opts)
		if err != nil {
			t.Fatal(err)
		}
		go s.Start()
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatalf("%s not ready in 10 s", name)
		}
		t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
		return s
	}
	a := node("a", "")
	seed := a.ClusterAddr().String()
	stranger := node("stranger", "not-the-password", seed)
	member := node("member", pw["NATS_ROUTE_PASSWORD"], seed)
	for start := time.Now(); member.NumRoutes() == 0; time.Sleep(50 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("a node with the route password did not join within 10 s")
		}
	}
	// The stranger, started first, has tried by now, and keeps failing.
	if n := stranger.NumRoutes(); n != 0 {
		t.Errorf("a node with a wrong route password has %d routes", n)
	}
}
