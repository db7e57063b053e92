package deploy

import (
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// TestComposeSecretsPerRole: each secret of .env reaches only the
// containers whose role needs it (the gateway never holds the LaaS
// credentials; no role holds another's NATS password), and compose refuses
// to start, naming the variable, while one is empty.
func TestComposeSecretsPerRole(t *testing.T) {
	p := loadCompose(t, nil)
	nats := []string{"nats-1", "nats-2", "nats-3"}
	holders := map[string][]string{
		"BRIDGE_MASTER_KEY":      {"gateway"},
		"NATS_GATEWAY_PASSWORD":  append([]string{"gateway"}, nats...),
		"NATS_WORKER_PASSWORD":   append([]string{"worker"}, nats...),
		"NATS_PRODUCER_PASSWORD": nats,
		"NATS_ADMIN_PASSWORD":    nats,
		"NATS_ROUTE_PASSWORD":    nats,
		// the demo's LaaS credentials: the workers', and the mock's
		"LAAS_API_KEY":      {"mock-laas", "worker"},
		"LAAS_PROJECT_CODE": {"mock-laas", "worker"},
	}
	values := map[string]string{"LAAS_API_KEY": "demo-api-key", "LAAS_PROJECT_CODE": "demo-project"}
	for k, v := range composeSecrets {
		values[k] = v
	}
	for secret, want := range holders {
		var got []string
		for _, name := range sorted(p.ServiceNames()) {
			s := p.Services[name]
			all := strings.Join(s.Command, " ")
			for _, v := range s.Environment {
				if v != nil {
					all += " " + *v
				}
			}
			if strings.Contains(all, values[secret]) {
				got = append(got, name)
			}
		}
		if slices.Sort(want); !slices.Equal(got, want) {
			t.Errorf("%s reaches %v, want only %v", secret, got, want)
		}
	}

	for secret := range composeSecrets {
		t.Run("without "+secret, func(t *testing.T) {
			_, err := loadComposeErr(t, map[string]string{secret: ""})
			if err == nil || !strings.Contains(err.Error(), "set "+secret+" in deploy/.env") {
				t.Errorf("compose with %s empty: %v, want an error that names it", secret, err)
			}
		})
	}
}

// TestKubernetesSecretsPerRole: each Deployment reads only its own Secret
// (the gateway's has no LaaS credentials, the worker's no master key),
// each connects to NATS as its own user, the NATS servers get the same
// users (auth.conf is nats/nats.conf) and passwords, and the NetworkPolicy
// lets only gateway, worker and labelled producer pods reach NATS's client
// port.
func TestKubernetesSecretsPerRole(t *testing.T) {
	m := loadManifests(t)
	want := map[string][]string{
		"laas-bridge-gateway": {"BRIDGE_MASTER_KEY", "NATS_URL"},
		"laas-bridge-worker":  {"LAAS_API_KEY", "LAAS_PRESET_HASH", "LAAS_PROJECT_CODE", "NATS_URL"},
	}
	users := m.secrets["laas-bridge-nats-users"]
	if users == nil {
		t.Fatal("no Secret laas-bridge-nats-users (the NATS servers' passwords)")
	}
	for name, d := range m.deployments {
		s := m.secrets[name]
		if s == nil {
			t.Fatalf("%s: no Secret of its own named %s", name, name)
		}
		if got := keys(s.StringData); !slices.Equal(got, want[name]) {
			t.Errorf("Secret %s holds %v, want %v", name, got, want[name])
		}
		role := strings.TrimPrefix(name, "laas-bridge-")
		u, err := url.Parse(s.StringData["NATS_URL"])
		if err != nil || u.User.Username() != role {
			t.Errorf("Secret %s: NATS_URL %v (%v), want the user %s", name, u.Redacted(), err, role)
		} else if pw, _ := u.User.Password(); pw != users.StringData[natsUsers[role]] {
			t.Errorf("Secret %s: the %s password differs from %s in laas-bridge-nats-users", name, role, natsUsers[role])
		}
		// Nothing else brings another Secret in: env, envFrom, volumes.
		pod := d.Spec.Template.Spec
		for _, c := range pod.Containers {
			for _, ef := range c.EnvFrom {
				if ef.SecretRef != nil && ef.SecretRef.Name != name {
					t.Errorf("%s: envFrom Secret %s", name, ef.SecretRef.Name)
				}
			}
			for _, e := range c.Env {
				if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil && e.ValueFrom.SecretKeyRef.Name != name {
					t.Errorf("%s: env %s from Secret %s", name, e.Name, e.ValueFrom.SecretKeyRef.Name)
				}
				if e.Name == "LAAS_API_KEY" && role == "gateway" {
					t.Errorf("the gateway sets LAAS_API_KEY")
				}
			}
		}
		for _, v := range pod.Volumes {
			if v.Secret != nil {
				t.Errorf("%s: volume from Secret %s", name, v.Secret.SecretName)
			}
		}
	}
	for _, cm := range m.configMaps {
		for k := range cm.Data {
			if strings.HasPrefix(k, "LAAS_API_KEY") || strings.HasPrefix(k, "LAAS_PROJECT_CODE") || k == "NATS_URL" || k == "BRIDGE_MASTER_KEY" {
				t.Errorf("ConfigMap %s holds %s, a secret", cm.Name, k)
			}
		}
	}
	if got := keys(users.StringData); !slices.Equal(got, sorted(values(natsUsers))) {
		t.Errorf("laas-bridge-nats-users holds %v, want %v", got, sorted(values(natsUsers)))
	}

	t.Run("auth.conf", func(t *testing.T) {
		conf, err := os.ReadFile("nats/nats.conf")
		if err != nil {
			t.Fatal(err)
		}
		cm := m.configMaps["laas-bridge-nats-auth"]
		if cm == nil || cm.Data["auth.conf"] != string(conf) {
			t.Error("ConfigMap laas-bridge-nats-auth's auth.conf is not deploy/nats/nats.conf")
		}
		values, err := os.ReadFile("k8s/nats/values.yaml")
		if err != nil {
			t.Fatal(err)
		}
		var v struct {
			Config struct {
				Merge map[string]string `json:"merge"`
			} `json:"config"`
			Container struct {
				Env map[string]struct {
					ValueFrom corev1.EnvVarSource `json:"valueFrom"`
				} `json:"env"`
			} `json:"container"`
		}
		if err := yaml.Unmarshal(values, &v); err != nil {
			t.Fatal(err)
		}
		if v.Config.Merge["$include"] != "./laas-bridge/auth.conf" || !strings.Contains(string(values), "configMap: {name: laas-bridge-nats-auth}") {
			t.Errorf("k8s/nats/values.yaml does not include the ConfigMap's auth.conf: %+v", v.Config.Merge)
		}
		for _, env := range natsUsers {
			ref := v.Container.Env[env].ValueFrom.SecretKeyRef
			if ref == nil || ref.Name != users.Name || ref.Key != env {
				t.Errorf("k8s/nats/values.yaml: %s is %+v, want it from %s", env, ref, users.Name)
			}
		}
	})

	t.Run("NetworkPolicy", func(t *testing.T) {
		np := m.policies["laas-bridge-nats"]
		if np == nil || len(m.policies) != 1 {
			t.Fatalf("NetworkPolicies %v, want laas-bridge-nats", keys(m.policies))
		}
		// The NATS Helm chart labels its pods with the release name.
		natsPod := map[string]string{"app.kubernetes.io/name": "nats", "app.kubernetes.io/instance": "nats", "app.kubernetes.io/component": "nats"}
		if !selects(np.Spec.PodSelector, natsPod) || selects(np.Spec.PodSelector, m.deployments["laas-bridge-gateway"].Spec.Template.Labels) {
			t.Errorf("podSelector %v does not select the NATS pods (only)", np.Spec.PodSelector.MatchLabels)
		}
		if !slices.Equal(np.Spec.PolicyTypes, []networkingv1.PolicyType{networkingv1.PolicyTypeIngress}) {
			t.Errorf("policyTypes %v", np.Spec.PolicyTypes)
		}
		producer := map[string]string{"laas-bridge.io/nats-client": "true"}
		stranger := map[string]string{"app": "something-else"}
		reaches := func(labels map[string]string, port int32) bool {
			for _, rule := range np.Spec.Ingress {
				portOK := false
				for _, p := range rule.Ports {
					portOK = portOK || p.Port.IntVal == port
				}
				for _, peer := range rule.From {
					if portOK && peer.NamespaceSelector == nil && peer.PodSelector != nil && selects(*peer.PodSelector, labels) {
						return true
					}
				}
				if portOK && len(rule.From) == 0 {
					return true // from anywhere
				}
			}
			return false
		}
		for who, labels := range map[string]map[string]string{
			"gateway": m.deployments["laas-bridge-gateway"].Spec.Template.Labels, "worker": m.deployments["laas-bridge-worker"].Spec.Template.Labels,
			"a labelled producer": producer, "another NATS node (routes)": natsPod,
		} {
			port := int32(4222)
			if who == "another NATS node (routes)" {
				port = 6222
			}
			if !reaches(labels, port) {
				t.Errorf("%s cannot reach NATS on %d", who, port)
			}
		}
		for _, port := range []int32{4222, 6222, 8222} {
			if reaches(stranger, port) {
				t.Errorf("any pod reaches NATS on %d", port)
			}
		}
	})
}

func selects(sel metav1.LabelSelector, labels map[string]string) bool {
	if len(sel.MatchLabels) == 0 && len(sel.MatchExpressions) == 0 {
		return true
	}
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			return false
		}
	}
	return len(sel.MatchExpressions) == 0
}

func values(m map[string]string) []string {
	var out []string
	for _, v := range m {
		out = append(out, v)
	}
	return out
}
