package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/laas-bridge/laas-bridge/schema"
)

// natsNode is one nats-server process of a test cluster.
type natsNode struct {
	*proc
	name string
	url  string // its client URL
}

// natsCluster is a JetStream cluster of nats-server processes.
type natsCluster struct {
	nodes []*natsNode
	urls  string // every client URL, comma-separated: a NATS_URL
}

// startCluster runs n nats-server processes (built from the module the
// bridge embeds) as one JetStream cluster on loopback, each with its own
// file store, and waits until JetStream can create a stream of n replicas.
func startCluster(t *testing.T, n int) *natsCluster {
	t.Helper()
	dir := t.TempDir()
	clients, routes := make([]int, n), make([]string, n)
	for i := range n {
		clients[i] = freePort(t)
		routes[i] = fmt.Sprintf("nats://127.0.0.1:%d", freePort(t))
	}
	c := &natsCluster{}
	var urls []string
	for i := range n {
		name := fmt.Sprintf("n%d", i+1)
		conf := filepath.Join(dir, name+".conf")
		text := fmt.Sprintf(`server_name: %s
listen: 127.0.0.1:%d
jetstream { store_dir: %q }
cluster {
  name: laas-test
  listen: %s
  routes: [%s]
}
`, name, clients[i], filepath.Join(dir, name), strings.TrimPrefix(routes[i], "nats://"), strings.Join(routes, ", "))
		if err := os.WriteFile(conf, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		p, _ := startExe(t, natsServer, "nats-"+name, dir, baseEnv(), natsReady, "-c", conf)
		url := fmt.Sprintf("nats://127.0.0.1:%d", clients[i])
		c.nodes = append(c.nodes, &natsNode{proc: p, name: name, url: url})
		urls = append(urls, url)
	}
	c.urls = strings.Join(urls, ",")

	// The meta leader is elected after the servers are "ready": wait until
	// an R<n> stream can be made.
	js := c.connect(t)
	probe := jetstream.StreamConfig{Name: "CLUSTER_PROBE", Subjects: []string{"cluster.probe"}, Replicas: n, Storage: jetstream.MemoryStorage}
	for start := time.Now(); ; time.Sleep(250 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := js.CreateStream(ctx, probe)
		if err == nil {
			err = js.DeleteStream(ctx, probe.Name)
			cancel()
			if err != nil {
				t.Fatal(err)
			}
			break
		}
		cancel()
		if time.Since(start) > time.Minute {
			t.Fatalf("the %d-node cluster cannot make an R%d stream within a minute: %v", n, n, err)
		}
	}
	return c
}

// connect opens a client connection to the cluster (any node).
func (c *natsCluster) connect(t *testing.T) jetstream.JetStream {
	t.Helper()
	return connectJS(t, c.urls)
}

// connectJS opens a client connection to the NATS servers at urls
// (comma-separated), closed by t.Cleanup.
func connectJS(t *testing.T, urls string, opts ...nats.Option) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(urls, append([]nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// node returns the node called name.
func (c *natsCluster) node(t *testing.T, name string) *natsNode {
	t.Helper()
	for _, n := range c.nodes {
		if n.name == name {
			return n
		}
	}
	t.Fatalf("no node %q", name)
	return nil
}

var jobDoneID = regexp.MustCompile(`msg="job done" .*request_id=(\S+)`)

// TestNATSClusterNodeKilledMidLoad: two gateways and three workers (each its
// own process) on a 3-node JetStream cluster with R3 streams and consumers,
// connected with NATS_URL listing all three servers. The node that leads
// the request stream is killed with SIGKILL in the middle of 300 requests
// spread over both gateways: every caller gets its own answer (status 200,
// its own text), none is lost, and the LaaS calls are at least one per
// request (a job whose ack was lost with the node may run twice; the test
// reports how many did).
func TestNATSClusterNodeKilledMidLoad(t *testing.T) {
	const requests, callers = 300, 48
	cluster := startCluster(t, 3)
	cfg, _ := filepath.Abs("testdata/config.yaml")
	mock, mockURL := startProc(t, "mock-laas", t.TempDir(), baseEnv(), mockReady,
		"mock-laas", "--listen", "127.0.0.1:0", "--project", "p", "--api-key", "k", "--latency", "300ms", "--access-log")
	env := baseEnv("NATS_URL="+cluster.urls, "BRIDGE_STREAM_REPLICAS=3", "BRIDGE_WORKER_CONCURRENCY=8", "BRIDGE_CONFIG="+cfg,
		"TEST_OWN_PRESET=own-hash", "BRIDGE_ACK_WAIT=5s", "LAAS_PROJECT_CODE=p", "LAAS_API_KEY=k", "LAAS_PRESET_HASH=h", "LAAS_BASE_URL="+mockURL)
	var gateways []*stack
	var procs []*proc
	for i := range 2 {
		gw, addr := startProc(t, fmt.Sprintf("gateway-%d", i), t.TempDir(), env, gatewayReady, "gateway", "--listen", "127.0.0.1:0")
		gateways = append(gateways, &stack{natsURL: cluster.urls, mock: mock, gateway: gw, url: "http://" + addr})
		procs = append(procs, gw)
	}
	var workers []*proc
	for i := range 3 {
		w, _ := startProc(t, fmt.Sprintf("worker-%d", i), t.TempDir(), append(env, "BRIDGE_LOG_LEVEL=info"), workerReady, "worker")
		workers = append(workers, w)
	}
	procs = append(procs, workers...)

	// Every stream and consumer the processes made has three replicas.
	js := cluster.connect(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, name := range []string{schema.StreamRequests, schema.StreamReplies, schema.StreamDead, "OBJ_" + schema.BucketBodies, "KV_" + schema.BucketAnswers} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		if got := s.CachedInfo().Config.Replicas; got != 3 {
			t.Errorf("stream %s has %d replicas, want 3", name, got)
		}
	}
	for _, name := range []string{schema.ConsumerWorkers, schema.ConsumerBatch} {
		c, err := js.Consumer(ctx, schema.StreamRequests, name)
		if err != nil {
			t.Fatalf("consumer %s: %v", name, err)
		}
		if got := c.CachedInfo().Config.Replicas; got != 3 {
			t.Errorf("consumer %s has %d replicas, want 3", name, got)
		}
	}

	// The load: caller i asks gateway i%2 for "caller i".
	out := make([]outcome, requests)
	next := make(chan int)
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i] = gateways[i%2].ask(fmt.Sprintf("caller %d", i))
			}
		}()
	}
	var killed *natsNode
	for i := range requests {
		if i == callers {
			// Mid-load: the first wave of calls (3 workers x 8) is done,
			// the second is halfway through its 300 ms, more wait in the
			// stream, and the callers wait on both gateways.
			for start := time.Now(); logLines(mock.logs.String(), `"status":200`) < 24; time.Sleep(10 * time.Millisecond) {
				if time.Since(start) > time.Minute {
					t.Fatalf("the mock served fewer than 24 calls in a minute:\n%s", mock.logs)
				}
			}
			time.Sleep(150 * time.Millisecond)
			s, err := js.Stream(ctx, schema.StreamRequests)
			if err != nil {
				t.Fatal(err)
			}
			leader := s.CachedInfo().Cluster.Leader
			killed = cluster.node(t, leader)
			t.Logf("SIGKILL %s, the leader of %s, at %s after %d LaaS calls", leader, schema.StreamRequests,
				time.Now().UTC().Format("15:04:05.000"), logLines(mock.logs.String(), `"status":200`))
			_ = killed.cmd.Process.Signal(syscall.SIGKILL)
		}
		next <- i
	}
	close(next)
	wg.Wait()

	answered := 0
	for i, o := range out {
		if o.status == 200 && o.content == fmt.Sprintf("mock[h]: caller %d", i) {
			answered++
		} else {
			t.Errorf("caller %d (gateway-%d): %+v", i, i%2, o)
		}
	}
	if answered != requests {
		t.Errorf("%d of %d callers got their own answer", answered, requests)
	}
	if err := <-killed.done; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("%s was not killed: %v", killed.name, err)
	}
	s, err := js.Stream(ctx, schema.StreamRequests)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("new leader of %s: %s", schema.StreamRequests, s.CachedInfo().Cluster.Leader)

	// At least one LaaS call per request; count the jobs run twice. A
	// worker logs "job done" after its ack, which may wait out the
	// election while its caller already has the answer: wait (at most
	// 30 s) for every job's line.
	runs := map[string]int{}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		clear(runs)
		for _, w := range workers {
			for _, m := range jobDoneID.FindAllStringSubmatch(w.logs.String(), -1) {
				runs[m[1]]++
			}
		}
		if len(runs) >= requests || time.Now().After(deadline) {
			break
		}
	}
	calls := logLines(mock.logs.String(), `"status":200`)
	twice := 0
	for _, n := range runs {
		if n > 1 {
			twice++
		}
	}
	t.Logf("LaaS calls: %d for %d requests; %d distinct requests finished by workers, %d of them more than once",
		calls, requests, len(runs), twice)
	if calls < requests || len(runs) != requests {
		t.Errorf("LaaS calls %d, distinct jobs done %d; want at least %d and exactly %d", calls, len(runs), requests, requests)
	}
	reconnects := 0
	for _, p := range procs {
		reconnects += logLines(p.logs.String(), `msg="nats reconnected"`)
	}
	t.Logf("bridge processes that reconnected to another node: %d", reconnects)

	for _, p := range append(procs, mock) {
		p.stop(t)
	}
	for _, n := range cluster.nodes {
		if n != killed {
			n.stop(t)
		}
	}
}
