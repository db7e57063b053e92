package deploy

import (
	"slices"
	"strings"
	"testing"
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
