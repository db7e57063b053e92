package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/laas-bridge/laas-bridge/schema"
)

// The images are built once per test binary run, by deploy/build-images.sh,
// under tags of their own, and removed at the end.
var images struct {
	once             sync.Once
	bridge, nats, lb string
	built            bool
	err              error
	buildDuration    time.Duration
}

func TestMain(m *testing.M) {
	// The reaper (ryuk) is an image that would have to be pulled, and no
	// registry answers here: the tests remove their own containers and
	// networks with t.Cleanup instead.
	os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	// testcontainers takes a /.dockerenv for "inside a container" and then
	// looks for published ports at the default gateway. Here the engine
	// runs on this machine (a local socket) and publishes on its loopback:
	// say so, unless the caller chose a host.
	if os.Getenv("TESTCONTAINERS_HOST_OVERRIDE") == "" {
		if h := os.Getenv("DOCKER_HOST"); h == "" || strings.HasPrefix(h, "unix://") {
			os.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "localhost")
		}
	}
	code := m.Run()
	if images.built {
		if out, err := exec.Command("docker", "rmi", images.bridge, images.nats, images.lb).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "docker rmi: %v\n%s", err, out)
		}
	}
	os.Exit(code)
}

// requireDocker skips the test, loudly, when no Docker engine answers. CI
// (.ci/run) fails when a Docker engine answers and these tests did not run.
func requireDocker(t *testing.T) *testcontainers.DockerClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cli, err := testcontainers.NewDockerClientWithOpts(ctx)
	if err == nil {
		_, err = cli.Ping(ctx, client.PingOptions{})
	}
	if err != nil {
		t.Skipf("CONTAINER TEST NOT RUN: no Docker engine answers (%v); install and start Docker to run the container tests", err)
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skipf("CONTAINER TEST NOT RUN: the docker CLI is not on PATH (deploy/build-images.sh needs it): %v", err)
	}
	t.Cleanup(func() { _ = cli.Close() })
	return cli
}

// buildImages runs deploy/build-images.sh once and returns the image names.
func buildImages(t *testing.T) (bridgeImage, natsImage, lbImage string) {
	t.Helper()
	images.once.Do(func() {
		tag := "test-" + strconv.Itoa(os.Getpid())
		images.bridge, images.nats, images.lb = "laas-bridge:"+tag, "laas-bridge-nats:"+tag, "laas-bridge-lb:"+tag
		start := time.Now()
		cmd := exec.Command("bash", "build-images.sh")
		cmd.Env = append(os.Environ(), "LAAS_BRIDGE_IMAGE="+images.bridge, "NATS_IMAGE="+images.nats, "LB_IMAGE="+images.lb)
		out, err := cmd.CombinedOutput()
		images.buildDuration = time.Since(start)
		images.built = err == nil
		if err != nil {
			images.err = fmt.Errorf("build-images.sh: %v\n%s", err, out)
		}
	})
	if images.err != nil {
		t.Fatal(images.err)
	}
	t.Logf("images %s, %s and %s (built in %s)", images.bridge, images.nats, images.lb, images.buildDuration.Round(time.Second))
	return images.bridge, images.nats, images.lb
}

// cstack is the bridge as containers on a network of its own: NATS nodes,
// the LaaS mock, gateways, workers and the load balancer.
type cstack struct {
	t                        *testing.T
	cli                      *testcontainers.DockerClient
	net                      *testcontainers.DockerNetwork
	bridgeImg, natImg, lbImg string
	nats                     []*testcontainers.DockerContainer
	natsNames                []string
	mock                     *testcontainers.DockerContainer
	gateways                 []*testcontainers.DockerContainer
	gatewayURLs              []string // each gateway's own URL on the host
	urls                     []string // where callers send: the gateways, or the lb
	workers                  []*testcontainers.DockerContainer
	lb                       *testcontainers.DockerContainer
	env                      map[string]string // every bridge container's
	gatewayEnv, workerEnv    map[string]string // one role's only
	natsPW                   map[string]string // NATS_<USER>_PASSWORD -> password
	masterKey                string
	replicas                 int
}

// newStack starts nodes NATS servers (a cluster when nodes > 1), the mock
// with the given latency, and waits for JetStream to have a leader.
func newStack(t *testing.T, nodes int, mockLatency string) *cstack {
	t.Helper()
	cli := requireDocker(t)
	bridgeImg, natsImg, lbImg := buildImages(t)
	ctx := context.Background()
	nw, err := network.New(ctx)
	testcontainers.CleanupNetwork(t, nw)
	if err != nil {
		t.Fatalf("create network: %v", err)
	}
	s := &cstack{t: t, cli: cli, net: nw, bridgeImg: bridgeImg, natImg: natsImg, lbImg: lbImg, replicas: nodes,
		natsPW: natsPasswords(t), masterKey: "sk-test-master"}
	var gwURLs, wkURLs, routes []string
	for i := range nodes {
		name := fmt.Sprintf("nats-%d", i+1)
		s.natsNames = append(s.natsNames, name)
		// Each role as its own user (deploy/nats/nats.conf).
		gwURLs = append(gwURLs, natsURL(name+":4222", "gateway", s.natsPW["NATS_GATEWAY_PASSWORD"]))
		wkURLs = append(wkURLs, natsURL(name+":4222", "worker", s.natsPW["NATS_WORKER_PASSWORD"]))
		// Routes log in too (as compose's do).
		routes = append(routes, natsURL(name+":6222", "route", s.natsPW["NATS_ROUTE_PASSWORD"]))
	}
	s.nats = make([]*testcontainers.DockerContainer, nodes)
	var wg sync.WaitGroup
	errs := make([]error, nodes)
	for i, name := range s.natsNames {
		args := []string{"-c", "/etc/nats/nats.conf", "--name", name, "--jetstream", "--store_dir", "/data", "--http_port", "8222"}
		if nodes > 1 {
			args = append(args, "--cluster_name", "laas", "--cluster", natsURL("0.0.0.0:6222", "route", s.natsPW["NATS_ROUTE_PASSWORD"]), "--routes", strings.Join(routes, ","))
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.nats[i], errs[i] = s.start([]string{name}, natsImg, args, s.natsPW, []string{"4222/tcp", "8222/tcp"}, wait.ForLog("Server is ready"))
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	s.waitJetStream()
	s.mock, err = s.start([]string{"mock-laas"}, bridgeImg, []string{"mock-laas", "--listen", "0.0.0.0:9901", "--project", "p", "--api-key", "k", "--latency", mockLatency, "--access-log"},
		nil, nil, wait.ForLog("mock-laas listening"))
	if err != nil {
		t.Fatal(err)
	}
	s.env = map[string]string{
		"BRIDGE_STREAM_REPLICAS": strconv.Itoa(nodes),
		"BRIDGE_ACK_WAIT":        "2s",
	}
	// As compose and Kubernetes: the gateway never holds the LaaS key.
	s.gatewayEnv = map[string]string{"NATS_URL": strings.Join(gwURLs, ","), "BRIDGE_MASTER_KEY": s.masterKey}
	s.workerEnv = map[string]string{
		"NATS_URL":          strings.Join(wkURLs, ","),
		"LAAS_BASE_URL":     "http://mock-laas:9901",
		"LAAS_PROJECT_CODE": "p",
		"LAAS_API_KEY":      "k",
		"LAAS_PRESET_HASH":  "h",
	}
	return s
}

// start runs one container on the stack's network, removed at cleanup;
// its output is logged when the test fails. Its DNS names on the network
// are aliases; the first names it in logs.
func (s *cstack) start(aliases []string, image string, cmd []string, env map[string]string, ports []string, ready wait.Strategy) (*testcontainers.DockerContainer, error) {
	alias := aliases[0]
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c, err := testcontainers.Run(ctx, image,
		network.WithNetwork(aliases, s.net),
		testcontainers.WithCmd(cmd...),
		testcontainers.WithEnv(env),
		testcontainers.WithExposedPorts(ports...),
		testcontainers.WithWaitStrategyAndDeadline(2*time.Minute, ready),
	)
	testcontainers.CleanupContainer(s.t, c)
	// Registered after the removal, so it runs before it.
	s.t.Cleanup(func() {
		if s.t.Failed() && c != nil {
			s.t.Logf("--- %s output (last 40 lines):\n%s", alias, tail(s.logs(c), 40))
		}
	})
	if err != nil {
		return nil, fmt.Errorf("start %s: %w", alias, err)
	}
	return c, nil
}

// addGateway starts a gateway, named gateway-<n> and, like every gateway,
// "gateway" (as compose names a service's containers), and adds its URL on
// the host to the callers' URLs.
func (s *cstack) addGateway() {
	s.t.Helper()
	alias := fmt.Sprintf("gateway-%d", len(s.gateways)+1)
	c, err := s.start([]string{alias, "gateway"}, s.bridgeImg, []string{"gateway"}, merge(s.env, s.gatewayEnv), []string{"4000/tcp"},
		wait.ForHTTP("/health/readiness").WithPort("4000/tcp"))
	if err != nil {
		s.t.Fatal(err)
	}
	ep, err := c.PortEndpoint(context.Background(), "4000/tcp", "http")
	if err != nil {
		s.t.Fatal(err)
	}
	s.gateways, s.gatewayURLs, s.urls = append(s.gateways, c), append(s.gatewayURLs, ep), append(s.urls, ep)
}

// addLB starts the load balancer in front of the gateways (upstream
// "gateway:4000", its default); from then on callers send to its port
// only. It is ready when a gateway's readiness answers through it.
func (s *cstack) addLB() {
	s.t.Helper()
	c, err := s.start([]string{"lb"}, s.lbImg, nil, nil, []string{"4000/tcp"},
		wait.ForAll(wait.ForLog("lb listening"), wait.ForHTTP("/health/readiness").WithPort("4000/tcp")))
	if err != nil {
		s.t.Fatal(err)
	}
	ep, err := c.PortEndpoint(context.Background(), "4000/tcp", "http")
	if err != nil {
		s.t.Fatal(err)
	}
	s.lb, s.urls = c, []string{ep}
}

// served is the chat requests gateway i answered 200, from its /metrics
// (laas_bridge_gateway_requests_total, summed over models and streams).
func (s *cstack) served(i int) int {
	s.t.Helper()
	req, err := http.NewRequest(http.MethodGet, s.gatewayURLs[i]+"/metrics", nil)
	if err != nil {
		s.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+s.masterKey) // a gateway's metrics are the admin's
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatalf("gateway-%d /metrics: %v", i+1, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		s.t.Fatalf("gateway-%d /metrics: status %d", i+1, resp.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		s.t.Fatalf("gateway-%d /metrics: %v", i+1, err)
	}
	n := 0
	for _, m := range mfs["laas_bridge_gateway_requests_total"].GetMetric() {
		for _, l := range m.GetLabel() {
			if l.GetName() == "status" && l.GetValue() == "200" {
				n += int(m.GetCounter().GetValue())
			}
		}
	}
	return n
}

// addWorker starts a worker with the given concurrency. It is ready when
// its pool runs and its metrics port (the Kubernetes liveness probe)
// answers.
func (s *cstack) addWorker(concurrency int) {
	s.t.Helper()
	env := merge(s.env, s.workerEnv, map[string]string{"BRIDGE_WORKER_CONCURRENCY": strconv.Itoa(concurrency), "BRIDGE_METRICS_LISTEN": ":9090"})
	c, err := s.start([]string{fmt.Sprintf("worker-%d", len(s.workers)+1)}, s.bridgeImg, []string{"worker"}, env, []string{"9090/tcp"},
		wait.ForAll(wait.ForLog("worker pool started"), wait.ForHTTP("/metrics").WithPort("9090/tcp")))
	if err != nil {
		s.t.Fatal(err)
	}
	s.workers = append(s.workers, c)
}

// merge returns the union of envs, the later winning.
func merge(envs ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, env := range envs {
		for k, v := range env {
			out[k] = v
		}
	}
	return out
}

func (s *cstack) logs(c *testcontainers.DockerContainer) string {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r, err := c.Logs(ctx)
	if err != nil {
		return fmt.Sprintf("(logs: %v)", err)
	}
	defer r.Close()
	b, _ := io.ReadAll(r)
	return string(b)
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// mockCalls counts the mock's access-log lines that contain what.
func (s *cstack) mockCalls(what string) int {
	return strings.Count(s.logs(s.mock), what)
}

// settledMockCalls waits (up to 15 s) until the mock's log shows at least
// min answered calls: the engine delivers a container's output a little
// after it is written. It returns every call and the calls cut off (499).
func (s *cstack) settledMockCalls(min int) (calls, cut int) {
	for start := time.Now(); s.mockCalls(`"status":200`) < min && time.Since(start) < 15*time.Second; {
		time.Sleep(200 * time.Millisecond)
	}
	logs := s.logs(s.mock)
	return strings.Count(logs, `"status"`), strings.Count(logs, `"status":499`)
}

// outcome is one caller's result.
type outcome struct {
	status  int
	code    string
	content string
	err     error
}

func (s *cstack) ask(url, text string) outcome {
	body := fmt.Sprintf(`{"model":"claude-3.5-sonnet","messages":[{"role":"user","content":%q}]}`, text)
	req, err := http.NewRequest(http.MethodPost, url+"/v1/chat/completions", strings.NewReader(body))
	if err != nil {
		return outcome{err: err}
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+s.masterKey)
	resp, err := (&http.Client{Timeout: 2 * time.Minute}).Do(req)
	if err != nil {
		return outcome{err: err}
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out struct {
		Choices []struct {
			Message struct{ Content string } `json:"message"`
		} `json:"choices"`
		Error struct{ Code string } `json:"error"`
	}
	_ = json.Unmarshal(b, &out)
	o := outcome{status: resp.StatusCode, code: out.Error.Code}
	if len(out.Choices) > 0 {
		o.content = out.Choices[0].Message.Content
	}
	return o
}

// load sends n requests with distinct texts ("<prefix> <i>"), conc at a
// time, spread over the gateways; once the mock has answered `after`
// calls it runs midway (if any) in the background.
func (s *cstack) load(prefix string, n, conc, after int, midway func()) []outcome {
	s.t.Helper()
	out := make([]outcome, n)
	next := make(chan int)
	var wg sync.WaitGroup
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out[i] = s.ask(s.urls[i%len(s.urls)], fmt.Sprintf("%s %d", prefix, i))
			}
		}()
	}
	midDone := make(chan struct{})
	if midway == nil {
		close(midDone)
	} else {
		go func() {
			defer close(midDone)
			for start := time.Now(); s.mockCalls(`"status":200`) < after; time.Sleep(100 * time.Millisecond) {
				if time.Since(start) > 2*time.Minute {
					s.t.Errorf("the mock answered fewer than %d calls in 2 minutes", after)
					return
				}
			}
			midway()
		}()
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
	<-midDone
	return out
}

// own checks that every caller got its own answer ("mock[h]: <prefix> <i>");
// 503 queue_unavailable (not accepted) counts as refused when allowed.
func own(t *testing.T, prefix string, out []outcome, refusedOK bool) (answered, refused int) {
	t.Helper()
	for i, o := range out {
		switch {
		case o.status == 200 && o.content == fmt.Sprintf("mock[h]: %s %d", prefix, i):
			answered++
		case refusedOK && o.status == 503 && o.code == "queue_unavailable":
			refused++
		default:
			t.Errorf("caller %d: %+v", i, o)
		}
	}
	return answered, refused
}

// TestContainersWorkerKilledMidLoad: on a 3-node NATS cluster (R3), a
// worker container killed (SIGKILL) in the middle of its LaaS calls loses
// nothing: 150 requests, 150 callers with their own answer.
func TestContainersWorkerKilledMidLoad(t *testing.T) {
	s := newStack(t, 3, "1s")
	s.addGateway()
	for range 3 {
		s.addWorker(4)
	}
	const n = 150
	out := s.load("kill", n, 24, 12, func() {
		time.Sleep(500 * time.Millisecond) // calls run in waves of 1 s: kill mid-wave
		t.Logf("killing worker-1 at %s", time.Now().UTC().Format("15:04:05.000"))
		if _, err := s.cli.ContainerKill(context.Background(), s.workers[0].GetContainerID(), client.ContainerKillOptions{Signal: "KILL"}); err != nil {
			t.Errorf("kill worker-1: %v", err)
		}
	})
	answered, _ := own(t, "kill", out, false)
	calls, cut := s.settledMockCalls(n)
	t.Logf("%d of %d callers got their own answer; LaaS calls: %d, of which %d cut off by the kill and run again", answered, n, calls, cut)
	if answered != n {
		t.Errorf("%d of %d callers got their own answer", answered, n)
	}
	if st, err := s.workers[0].State(context.Background()); err != nil || st.Running || st.ExitCode != 137 {
		t.Errorf("worker-1 was not killed: %+v %v", st, err)
	}
	// The mock records a call whose caller went away as 499.
	if cut == 0 || calls < n+cut {
		t.Errorf("%d calls cut off, %d in all: the worker was not killed mid-call, or its calls did not run again", cut, calls)
	}
}

// TestContainersNATSNodeStoppedMidLoad: the NATS node that leads the R3
// request stream, stopped in the middle of the load, loses no accepted
// request: every caller gets its own answer, or a 503 queue_unavailable
// that says the request was not accepted; nobody waits in vain.
func TestContainersNATSNodeStoppedMidLoad(t *testing.T) {
	s := newStack(t, 3, "200ms")
	s.addGateway()
	s.addGateway()
	s.addWorker(4)
	s.addWorker(4)
	leader, replicas := s.streamLeader()
	if replicas != 3 {
		t.Fatalf("%s has %d replicas, want 3 (BRIDGE_STREAM_REPLICAS=3)", schema.StreamRequests, replicas)
	}
	node := -1
	for i, name := range s.natsNames {
		if name == leader {
			node = i
		}
	}
	if node < 0 {
		t.Fatalf("stream leader %q is none of %v", leader, s.natsNames)
	}
	const n = 300
	out := s.load("stop", n, 32, 40, func() {
		t.Logf("stopping %s (the stream leader) at %s", leader, time.Now().UTC().Format("15:04:05.000"))
		timeout := 10 * time.Second
		if err := s.nats[node].Stop(context.Background(), &timeout); err != nil {
			t.Errorf("stop %s: %v", leader, err)
		}
	})
	answered, refused := own(t, "stop", out, true)
	newLeader, _ := s.streamLeader()
	calls, _ := s.settledMockCalls(answered)
	t.Logf("answered %d, refused while the stream moved %d, of %d; stream leader %s -> %s; LaaS calls %d",
		answered, refused, n, leader, newLeader, calls)
	if answered+refused != n || answered < n*3/4 {
		t.Errorf("answered %d + refused %d of %d", answered, refused, n)
	}
	if newLeader == leader {
		t.Errorf("the stream leader is still %s: the node was not stopped", leader)
	}
}

// TestContainersScaleWorkers: with the mock at 200 ms and 2 calls at a
// time per worker container, a second worker container at least 1.6x the
// throughput of one (ideal: 2x).
func TestContainersScaleWorkers(t *testing.T) {
	s := newStack(t, 1, "200ms")
	s.addGateway()
	const n, conc = 80, 12
	measure := func(workers int) float64 {
		s.load(fmt.Sprintf("warm%d", workers), 2*workers, 2*workers, 0, nil)
		start := time.Now()
		out := s.load(fmt.Sprintf("scale%d", workers), n, conc, 0, nil)
		d := time.Since(start)
		if answered, _ := own(t, fmt.Sprintf("scale%d", workers), out, false); answered != n {
			t.Fatalf("%d workers: %d of %d answered", workers, answered, n)
		}
		rate := float64(n) / d.Seconds()
		t.Logf("%d worker container(s) x 2 calls, mock 200 ms: %d requests in %s = %.1f req/s (ideal %d)", workers, n, d.Round(time.Millisecond), rate, 10*workers)
		return rate
	}
	s.addWorker(2)
	one := measure(1)
	s.addWorker(2)
	two := measure(2)
	ratio := two / one
	t.Logf("2 workers / 1 worker = %.2fx", ratio)
	if ratio < 1.6 {
		t.Errorf("2 workers give %.2fx the throughput of 1, want at least 1.6x", ratio)
	}
}

// TestContainersLoadBalancer: two gateways behind the lb image (deploy/lb),
// reached on its one port. Every request through it is answered, and both
// gateways serve them; once one gateway is stopped, every request goes to
// the other, and none is lost or refused.
func TestContainersLoadBalancer(t *testing.T) {
	s := newStack(t, 1, "200ms")
	s.addGateway()
	s.addGateway()
	s.addWorker(8)
	s.addLB()
	const n = 40
	out := s.load("lb", n, 8, 0, nil)
	if answered, _ := own(t, "lb", out, false); answered != n {
		t.Fatalf("%d of %d callers through the lb got their own answer", answered, n)
	}
	one, two := s.served(0), s.served(1)
	t.Logf("through the lb's one port: %d of %d answered; gateway-1 served %d, gateway-2 %d", n, n, one, two)
	if one+two != n || one == 0 || two == 0 {
		t.Errorf("gateway-1 served %d and gateway-2 %d of %d: want all, on both", one, two, n)
	}

	timeout := 10 * time.Second
	if err := s.gateways[0].Stop(context.Background(), &timeout); err != nil {
		t.Fatalf("stop gateway-1: %v", err)
	}
	out = s.load("after", n, 8, 0, nil)
	answered, _ := own(t, "after", out, false)
	after := s.served(1)
	t.Logf("gateway-1 stopped: %d of %d answered through the lb; gateway-2 served %d of them", answered, n, after-two)
	if answered != n || after-two != n {
		t.Errorf("with gateway-1 stopped: %d of %d answered, gateway-2 served %d; want all %d", answered, n, after-two, n)
	}
}
