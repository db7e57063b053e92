package deploy

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/loader"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/joho/godotenv"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"

	"github.com/laas-bridge/laas-bridge/bridge"
	"github.com/laas-bridge/laas-bridge/queue"
	"github.com/laas-bridge/laas-bridge/queue/queuetest"
	"github.com/laas-bridge/laas-bridge/schema"
)

// scaledObject is the part of KEDA's keda.sh/v1alpha1 ScaledObject these
// manifests may use (KEDA's Go module is not a dependency): strict decoding
// into it refuses any field KEDA does not have under these names.
type scaledObject struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name      string            `json:"name"`
		Namespace string            `json:"namespace,omitempty"`
		Labels    map[string]string `json:"labels,omitempty"`
	} `json:"metadata"`
	Spec struct {
		ScaleTargetRef struct {
			APIVersion string `json:"apiVersion,omitempty"`
			Kind       string `json:"kind,omitempty"`
			Name       string `json:"name"`
		} `json:"scaleTargetRef"`
		PollingInterval *int32 `json:"pollingInterval,omitempty"`
		CooldownPeriod  *int32 `json:"cooldownPeriod,omitempty"`
		MinReplicaCount *int32 `json:"minReplicaCount,omitempty"`
		MaxReplicaCount *int32 `json:"maxReplicaCount,omitempty"`
		Triggers        []struct {
			Type     string            `json:"type"`
			Name     string            `json:"name,omitempty"`
			Metadata map[string]string `json:"metadata"`
		} `json:"triggers"`
	} `json:"spec"`
}

// manifests holds every object in k8s/, decoded strictly by kind.
type manifests struct {
	deployments map[string]*appsv1.Deployment
	services    map[string]*corev1.Service
	configMaps  map[string]*corev1.ConfigMap
	secrets     map[string]*corev1.Secret
	scaled      map[string]*scaledObject
	policies    map[string]*networkingv1.NetworkPolicy
}

func loadManifests(t *testing.T) manifests {
	t.Helper()
	m := manifests{map[string]*appsv1.Deployment{}, map[string]*corev1.Service{}, map[string]*corev1.ConfigMap{}, map[string]*corev1.Secret{}, map[string]*scaledObject{}, map[string]*networkingv1.NetworkPolicy{}}
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no manifests in k8s/: %v", err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for i, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(data), -1) {
			if strings.TrimSpace(stripComments(doc)) == "" {
				continue
			}
			where := fmt.Sprintf("%s document %d", f, i+1)
			var head struct{ APIVersion, Kind string }
			if err := yaml.Unmarshal([]byte(doc), &head); err != nil {
				t.Fatalf("%s: %v", where, err)
			}
			var name string
			switch head.APIVersion + " " + head.Kind {
			case "apps/v1 Deployment":
				var d appsv1.Deployment
				strict(t, where, doc, &d)
				name, m.deployments[d.Name] = d.Name, &d
			case "v1 Service":
				var s corev1.Service
				strict(t, where, doc, &s)
				name, m.services[s.Name] = s.Name, &s
			case "v1 ConfigMap":
				var c corev1.ConfigMap
				strict(t, where, doc, &c)
				name, m.configMaps[c.Name] = c.Name, &c
			case "v1 Secret":
				var s corev1.Secret
				strict(t, where, doc, &s)
				name, m.secrets[s.Name] = s.Name, &s
			case "networking.k8s.io/v1 NetworkPolicy":
				var n networkingv1.NetworkPolicy
				strict(t, where, doc, &n)
				name, m.policies[n.Name] = n.Name, &n
			case "keda.sh/v1alpha1 ScaledObject":
				var s scaledObject
				strict(t, where, doc, &s)
				name, m.scaled[s.Metadata.Name] = s.Metadata.Name, &s
			default:
				t.Fatalf("%s: unexpected kind %s %s", where, head.APIVersion, head.Kind)
			}
			if name == "" {
				t.Errorf("%s: no metadata.name", where)
			}
		}
	}
	return m
}

func stripComments(doc string) string {
	return regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(doc, "")
}

// strict decodes doc into v, refusing unknown and duplicate fields.
func strict(t *testing.T, where, doc string, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict([]byte(doc), v); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
}

// knownEnv is every environment variable laas-bridge reads: the envconfig
// tags of cmd/laas-bridge's Env.
func knownEnv(t *testing.T) map[string]bool {
	t.Helper()
	src, err := os.ReadFile("../cmd/laas-bridge/env.go")
	if err != nil {
		t.Fatal(err)
	}
	known := map[string]bool{}
	for _, m := range regexp.MustCompile(`envconfig:"([A-Z0-9_]+)"`).FindAllStringSubmatch(string(src), -1) {
		known[m[1]] = true
	}
	if !known["NATS_URL"] || !known["LAAS_API_KEY"] {
		t.Fatalf("env.go: found only %v", known)
	}
	return known
}

// servedPaths starts a real gateway in-process (embedded NATS) and reports
// the status of GET path, for the probes.
func servedStatus(t *testing.T) func(path string) int {
	q := queuetest.Start(t, queue.Config{Memory: true})
	catalog, err := schema.NewCatalog(nil)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := bridge.New(bridge.Config{}, q.Conn, q.JS, catalog, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = gw.Close() })
	srv := httptest.NewServer(gw.Handler())
	t.Cleanup(srv.Close)
	return func(path string) int {
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
}

func TestKubernetesManifests(t *testing.T) {
	m := loadManifests(t)
	known := knownEnv(t)
	gw, worker := m.deployments["laas-bridge-gateway"], m.deployments["laas-bridge-worker"]
	if gw == nil || worker == nil || len(m.deployments) != 2 {
		t.Fatalf("deployments: want laas-bridge-gateway and laas-bridge-worker, got %v", keys(m.deployments))
	}
	status := servedStatus(t)

	for _, d := range []*appsv1.Deployment{gw, worker} {
		t.Run(d.Name, func(t *testing.T) {
			pod := d.Spec.Template
			for k, v := range d.Spec.Selector.MatchLabels {
				if pod.Labels[k] != v {
					t.Errorf("selector %s=%s does not match the pod's labels %v", k, v, pod.Labels)
				}
			}
			if sc := pod.Spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot || sc.RunAsUser == nil || *sc.RunAsUser != 65532 {
				t.Errorf("pod must run as non-root 65532 (the image's user): %+v", sc)
			}
			if len(pod.Spec.Containers) != 1 {
				t.Fatalf("%d containers", len(pod.Spec.Containers))
			}
			c := pod.Spec.Containers[0]
			if c.Image != "laas-bridge:dev" {
				t.Errorf("image %q, want laas-bridge:dev (what deploy/build-images.sh builds)", c.Image)
			}
			role := strings.TrimPrefix(d.Name, "laas-bridge-")
			if !slices.Equal(c.Args, []string{role}) || len(c.Command) != 0 {
				t.Errorf("command %v args %v, want the image's entrypoint with args [%s]", c.Command, c.Args, role)
			}
			var refs []string
			for _, ef := range c.EnvFrom {
				switch {
				case ef.ConfigMapRef != nil:
					cm := m.configMaps[ef.ConfigMapRef.Name]
					if cm == nil {
						t.Fatalf("envFrom names ConfigMap %q, which is not in k8s/", ef.ConfigMapRef.Name)
					}
					for k := range cm.Data {
						if !known[k] {
							t.Errorf("ConfigMap %s sets %s, which laas-bridge does not read", cm.Name, k)
						}
					}
					refs = append(refs, "configmap")
				case ef.SecretRef != nil:
					s := m.secrets[ef.SecretRef.Name]
					if s == nil {
						t.Fatalf("envFrom names Secret %q, which is not in k8s/", ef.SecretRef.Name)
					}
					for k := range s.StringData {
						if !known[k] {
							t.Errorf("Secret %s sets %s, which laas-bridge does not read", s.Name, k)
						}
					}
					if s.Name != d.Name {
						t.Errorf("envFrom names Secret %s: each role has its own Secret, %s", s.Name, d.Name)
					}
					refs = append(refs, "secret")
				}
			}
			if !slices.Equal(refs, []string{"configmap", "secret"}) {
				t.Errorf("envFrom: %v, want a ConfigMap and a Secret", refs)
			}
			for _, e := range c.Env {
				if !known[e.Name] {
					t.Errorf("env %s: laas-bridge does not read it", e.Name)
				}
			}
			ports := map[string]int32{}
			for _, p := range c.Ports {
				ports[p.Name] = p.ContainerPort
			}
			probePort := func(what string, p *corev1.Probe) (string, int32) {
				t.Helper()
				if p == nil || p.HTTPGet == nil {
					t.Fatalf("%s: want an httpGet probe, got %+v", what, p)
				}
				port, ok := ports[p.HTTPGet.Port.StrVal]
				if p.HTTPGet.Port.Type != intstr.String || !ok {
					t.Fatalf("%s: port %s is not a named port of the container (%v)", what, p.HTTPGet.Port.String(), ports)
				}
				return p.HTTPGet.Path, port
			}
			switch role {
			case "gateway":
				if ports["http"] != 4000 {
					t.Errorf("gateway http port %d, want 4000", ports["http"])
				}
				for what, p := range map[string]*corev1.Probe{"readiness": c.ReadinessProbe, "liveness": c.LivenessProbe} {
					path, port := probePort(what, p)
					if port != 4000 {
						t.Errorf("%s probe on port %d", what, port)
					}
					if got := status(path); got != http.StatusOK {
						t.Errorf("%s probe GET %s: a running gateway answers %d, want 200", what, path, got)
					}
				}
				if c.ReadinessProbe.HTTPGet.Path != "/health/readiness" {
					t.Errorf("readiness probe on %s, want /health/readiness (it checks NATS and the stream)", c.ReadinessProbe.HTTPGet.Path)
				}
			case "worker":
				if c.ReadinessProbe != nil {
					t.Error("a worker takes no traffic: no readiness probe")
				}
				path, port := probePort("liveness", c.LivenessProbe)
				listen := ""
				for _, e := range c.Env {
					if e.Name == "BRIDGE_METRICS_LISTEN" {
						listen = e.Value
					}
				}
				if path != "/metrics" || listen != ":"+strconv.Itoa(int(port)) {
					t.Errorf("worker liveness GET %s on %d; BRIDGE_METRICS_LISTEN=%q: want /metrics on the metrics listener", path, port, listen)
				}
			}
			models := false
			for _, vm := range c.VolumeMounts {
				for _, v := range pod.Spec.Volumes {
					if v.Name == vm.Name && v.ConfigMap != nil && m.configMaps[v.ConfigMap.Name] != nil && vm.MountPath == "/etc/laas-bridge" {
						models = m.configMaps[v.ConfigMap.Name].Data["config.yaml"] != ""
					}
				}
			}
			if !models {
				t.Error("no ConfigMap with config.yaml mounted at /etc/laas-bridge")
			}
		})
	}

	t.Run("env", func(t *testing.T) {
		env := m.configMaps["laas-bridge-env"].Data
		if env["BRIDGE_CONFIG"] != "/etc/laas-bridge/config.yaml" || env["BRIDGE_STREAM_REPLICAS"] != "3" {
			t.Errorf("laas-bridge-env: %v", env)
		}
		if _, ok := env["NATS_URL"]; ok {
			t.Error("laas-bridge-env sets NATS_URL: it carries a role's password, so it belongs in that role's Secret")
		}
		// The models ConfigMap lists the same models as the repository's config.yaml.
		var inK8s, inRepo struct {
			ModelList []map[string]any `json:"model_list"`
		}
		if err := yaml.Unmarshal([]byte(m.configMaps["laas-bridge-models"].Data["config.yaml"]), &inK8s); err != nil {
			t.Fatal(err)
		}
		repo, err := os.ReadFile("../config.yaml")
		if err != nil {
			t.Fatal(err)
		}
		if err := yaml.Unmarshal(repo, &inRepo); err != nil {
			t.Fatal(err)
		}
		a, _ := yaml.Marshal(inK8s)
		b, _ := yaml.Marshal(inRepo)
		if len(inK8s.ModelList) == 0 || !bytes.Equal(a, b) {
			t.Errorf("models ConfigMap:\n%s\nrepository config.yaml:\n%s", a, b)
		}
	})

	t.Run("service", func(t *testing.T) {
		svc := m.services["laas-bridge"]
		if svc == nil || len(m.services) != 1 {
			t.Fatalf("services: %v", keys(m.services))
		}
		for k, v := range svc.Spec.Selector {
			if gw.Spec.Template.Labels[k] != v {
				t.Errorf("service selector %s=%s does not select the gateway pods", k, v)
			}
		}
		if worker.Spec.Template.Labels["app.kubernetes.io/component"] == svc.Spec.Selector["app.kubernetes.io/component"] {
			t.Error("the service selects worker pods too")
		}
		if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 4000 || svc.Spec.Ports[0].TargetPort != intstr.FromString("http") {
			t.Errorf("service ports %+v, want 4000 -> http", svc.Spec.Ports)
		}
	})

	t.Run("keda", func(t *testing.T) {
		so := m.scaled["laas-bridge-worker"]
		if so == nil || len(m.scaled) != 1 {
			t.Fatalf("ScaledObjects: %v", keys(m.scaled))
		}
		ref := so.Spec.ScaleTargetRef
		if ref.Name != worker.Name || ref.Kind != "Deployment" || ref.APIVersion != "apps/v1" {
			t.Errorf("scaleTargetRef %+v, want the worker Deployment", ref)
		}
		if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount < 1 {
			t.Error("minReplicaCount must be at least 1: a worker must be there to take the first job (the scaler sees lag only)")
		}
		var consumers []string
		for _, tr := range so.Spec.Triggers {
			md := tr.Metadata
			if tr.Type != "nats-jetstream" {
				t.Errorf("trigger type %q", tr.Type)
			}
			if md["stream"] != schema.StreamRequests || md["account"] != "$G" || !strings.HasSuffix(md["natsServerMonitoringEndpoint"], ":8222") {
				t.Errorf("trigger %s metadata %v", tr.Name, md)
			}
			if n, err := strconv.Atoi(md["lagThreshold"]); err != nil || n < 1 {
				t.Errorf("trigger %s lagThreshold %q", tr.Name, md["lagThreshold"])
			}
			for k := range md {
				if !slices.Contains([]string{"natsServerMonitoringEndpoint", "account", "stream", "consumer", "lagThreshold", "activationLagThreshold", "useHttps"}, k) {
					t.Errorf("trigger %s: %s is not a nats-jetstream parameter", tr.Name, k)
				}
			}
			consumers = append(consumers, md["consumer"])
		}
		slices.Sort(consumers)
		if want := []string{schema.ConsumerWorkers, schema.ConsumerBatch}; !slices.Equal(consumers, want) {
			t.Errorf("triggers on consumers %v, want %v", consumers, want)
		}
	})
}

func keys[V any](m map[string]V) []string {
	var k []string
	for name := range m {
		k = append(k, name)
	}
	slices.Sort(k)
	return k
}

// composeSecrets are the secrets .env.example leaves empty, as a user
// fills them in.
var composeSecrets = map[string]string{
	"BRIDGE_MASTER_KEY":      "mk0123456789abcdef",
	"NATS_GATEWAY_PASSWORD":  "gw0123456789abcdef",
	"NATS_WORKER_PASSWORD":   "wk0123456789abcdef",
	"NATS_PRODUCER_PASSWORD": "pr0123456789abcdef",
	"NATS_ADMIN_PASSWORD":    "ad0123456789abcdef",
	"NATS_ROUTE_PASSWORD":    "rt0123456789abcdef",
}

// loadCompose loads compose.yaml as Compose does, with .env.example and
// composeSecrets as the project's .env, and env as the shell's environment.
func loadCompose(t *testing.T, env map[string]string) *types.Project {
	t.Helper()
	p, err := loadComposeErr(t, env)
	if err != nil {
		t.Fatalf("load compose.yaml: %v", err)
	}
	return p
}

func loadComposeErr(t *testing.T, env map[string]string) (*types.Project, error) {
	t.Helper()
	dir := t.TempDir()
	for src, dst := range map[string]string{"compose.yaml": "compose.yaml", ".env.example": ".env"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, dst), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	dotEnv, err := godotenv.Read(filepath.Join(dir, ".env"))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range composeSecrets {
		if dotEnv[k] != "" {
			t.Errorf(".env.example sets %s: a secret has no default", k)
		}
		dotEnv[k] = v
	}
	for k, v := range env {
		dotEnv[k] = v // the shell wins over .env
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return loader.LoadWithContext(ctx, types.ConfigDetails{
		WorkingDir:  dir,
		ConfigFiles: []types.ConfigFile{{Filename: filepath.Join(dir, "compose.yaml")}},
		Environment: dotEnv,
	}, func(o *loader.Options) { o.SetProjectName("laas-bridge", true) }, loader.WithProfiles(strings.Split(dotEnv["COMPOSE_PROFILES"], ",")))
}

func TestComposeFile(t *testing.T) {
	known := knownEnv(t)
	p := loadCompose(t, nil)
	if got, want := p.ServiceNames(), []string{"gateway", "lb", "mock-laas", "nats-1", "nats-2", "nats-3", "worker"}; !slices.Equal(sorted(got), want) {
		t.Fatalf("services %v, want %v (the demo profile on)", sorted(got), want)
	}
	rt := "route:" + composeSecrets["NATS_ROUTE_PASSWORD"] + "@"
	routes := "nats://" + rt + "nats-1:6222,nats://" + rt + "nats-2:6222,nats://" + rt + "nats-3:6222"
	for _, name := range []string{"nats-1", "nats-2", "nats-3"} {
		s := p.Services[name]
		cmd := strings.Join(s.Command, " ")
		for _, want := range []string{"-c /etc/nats/nats.conf", "--name " + name, "--jetstream", "--store_dir /data", "--cluster_name laas", "--cluster nats://" + rt + "0.0.0.0:6222", "--routes " + routes, "--http_port 8222"} {
			if !strings.Contains(cmd, want) {
				t.Errorf("%s command %q lacks %q", name, cmd, want)
			}
		}
		if s.Image != "laas-bridge-nats:dev" {
			t.Errorf("%s image %q", name, s.Image)
		}
		if len(s.Volumes) != 2 || s.Volumes[0].Type != "volume" || s.Volumes[0].Source != name || s.Volumes[0].Target != "/data" {
			t.Errorf("%s volumes %+v: want its own named volume on /data, and nats.conf", name, s.Volumes)
		}
		if v := s.Volumes[len(s.Volumes)-1]; v.Type != "bind" || !strings.HasSuffix(v.Source, "/nats/nats.conf") || v.Target != "/etc/nats/nats.conf" || !v.ReadOnly {
			t.Errorf("%s: nats.conf mounted as %+v, want deploy/nats/nats.conf read-only on /etc/nats/nats.conf", name, v)
		}
		for user, v := range natsUsers {
			if got := s.Environment[v]; got == nil || *got != composeSecrets[v] {
				t.Errorf("%s: %s (the %s user's password, which nats.conf reads) is %v", name, v, user, got)
			}
		}
	}
	for _, name := range []string{"gateway", "worker"} {
		s := p.Services[name]
		if s.Image != "laas-bridge:dev" || !slices.Equal(s.Command, []string{name}) {
			t.Errorf("%s: image %q command %v", name, s.Image, s.Command)
		}
		env := s.Environment
		pw := composeSecrets["NATS_"+strings.ToUpper(name)+"_PASSWORD"]
		wantURL := fmt.Sprintf("nats://%[1]s:%[2]s@nats-1:4222,nats://%[1]s:%[2]s@nats-2:4222,nats://%[1]s:%[2]s@nats-3:4222", name, pw)
		if v := env["NATS_URL"]; v == nil || *v != wantURL {
			t.Errorf("%s NATS_URL %v, want its own user on each node", name, v)
		}
		if v := env["BRIDGE_STREAM_REPLICAS"]; v == nil || *v != "3" {
			t.Errorf("%s BRIDGE_STREAM_REPLICAS %v", name, v)
		}
		if len(s.EnvFiles) != 0 {
			t.Errorf("%s env_file %v: .env holds every role's secrets; a container gets only its own", name, s.EnvFiles)
		}
		for k := range env {
			if !known[k] {
				t.Errorf("%s: %s is set, but laas-bridge does not read it", name, k)
			}
		}
		if s.Restart != "unless-stopped" {
			t.Errorf("%s restart %q: gateway and worker exit when the cluster is not ready at start", name, s.Restart)
		}
	}
	gw := p.Services["gateway"]
	if gw.Scale == nil || *gw.Scale != 2 {
		t.Errorf("gateway scale %v, want 2", gw.Scale)
	}
	for _, name := range []string{"gateway", "worker"} {
		if len(p.Services[name].Ports) != 0 {
			t.Errorf("%s publishes %+v: it must publish no port, so that `--scale %s=N` never clashes", name, p.Services[name].Ports, name)
		}
	}
	// The lb is the gateways' one port: it resolves the gateway service's
	// name, on the gateway's port (the image's BRIDGE_LISTEN=:4000).
	lb := p.Services["lb"]
	if lb.Image != "laas-bridge-lb:dev" {
		t.Errorf("lb image %q, want laas-bridge-lb:dev (what deploy/build-images.sh builds)", lb.Image)
	}
	if v := lb.Environment["LB_UPSTREAM"]; v == nil || *v != "gateway:4000" {
		t.Errorf("lb LB_UPSTREAM %v, want gateway:4000", v)
	}
	if _, ok := lb.DependsOn["gateway"]; !ok || lb.Restart != "unless-stopped" {
		t.Errorf("lb depends_on %v restart %q: want the gateways first, and restart unless-stopped", lb.DependsOn, lb.Restart)
	}
	if len(lb.Ports) != 1 || lb.Ports[0].Target != 4000 || lb.Ports[0].Published != "4000" || lb.Ports[0].HostIP != "127.0.0.1" {
		t.Errorf("lb ports %+v, want 127.0.0.1:4000:4000", lb.Ports)
	}
	if lb.EnvFiles != nil {
		t.Errorf("lb env_file %v: the LaaS credentials in .env are not the lb's", lb.EnvFiles)
	}
	mock := p.Services["mock-laas"]
	if v := mock.Environment["MOCK_LAAS_LISTEN"]; v == nil || *v != "0.0.0.0:9901" || !slices.Equal(mock.Profiles, []string{"demo"}) {
		t.Errorf("mock-laas: listen %v, profiles %v", v, mock.Profiles)
	}

	t.Run("image names from the environment", func(t *testing.T) {
		p := loadCompose(t, map[string]string{"LAAS_BRIDGE_IMAGE": "registry.example/laas-bridge:1.2", "NATS_IMAGE": "nats:2.15-alpine", "LB_IMAGE": "registry.example/lb:1.2"})
		for name, s := range p.Services {
			want := "registry.example/laas-bridge:1.2"
			switch {
			case strings.HasPrefix(name, "nats-"):
				want = "nats:2.15-alpine"
			case name == "lb":
				want = "registry.example/lb:1.2"
			}
			if s.Image != want {
				t.Errorf("%s image %q, want %q", name, s.Image, want)
			}
		}
	})
	t.Run("GATEWAY_PORT", func(t *testing.T) {
		p := loadCompose(t, map[string]string{"GATEWAY_PORT": "8080"})
		if ports := p.Services["lb"].Ports; len(ports) != 1 || ports[0].Published != "8080" || ports[0].Target != 4000 || ports[0].HostIP != "127.0.0.1" {
			t.Errorf("lb ports %+v, want 127.0.0.1:8080:4000", ports)
		}
	})
	t.Run("GATEWAY_BIND", func(t *testing.T) {
		p := loadCompose(t, map[string]string{"GATEWAY_BIND": "0.0.0.0"})
		if ports := p.Services["lb"].Ports; len(ports) != 1 || ports[0].Published != "4000" || ports[0].HostIP != "0.0.0.0" {
			t.Errorf("lb ports %+v, want 0.0.0.0:4000:4000", ports)
		}
	})
	t.Run("without the demo profile", func(t *testing.T) {
		p := loadCompose(t, map[string]string{"COMPOSE_PROFILES": ""})
		if _, ok := p.Services["mock-laas"]; ok {
			t.Error("mock-laas runs without the demo profile")
		}
	})
}

func sorted(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return s
}
