package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// modelConfig is a config.yaml serving models, each with its own preset
// (preset-<model>) and a timeout of timeout seconds.
func modelConfig(timeout int, models ...string) string {
	var b strings.Builder
	b.WriteString("model_list:\n")
	for _, m := range models {
		fmt.Fprintf(&b, "  - model_name: %s\n    litellm_params:\n      model: laas/%s\n      preset_hash: preset-%s\n      timeout: %d\n", m, m, m, timeout)
	}
	return b.String()
}

// listModels is GET /v1/models's ids.
func listModels(t *testing.T, addr string) []string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/v1/models")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Data []struct{ ID string } `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /v1/models: %d, %v", resp.StatusCode, err)
	}
	var ids []string
	for _, m := range list.Data {
		ids = append(ids, m.ID)
	}
	return ids
}

// chatModel asks model for an answer and returns the status and body.
func chatModel(t *testing.T, addr, model string) (int, string) {
	t.Helper()
	resp, err := http.Post("http://"+addr+"/v1/chat/completions", "application/json",
		strings.NewReader(`{"model":"`+model+`","messages":[{"role":"user","content":"hi"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// waitFor polls cond every 20 ms for up to 20 s, then fails with what.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not within 20s: %s", what)
		}
	}
}

// TestConfigReloadProcess runs `serve --demo` on a config file and changes
// the file under it. On SIGHUP (the file watch off) the new model list is
// in force: /v1/models lists it, a new model answers with its own preset,
// a removed one is model_not_found. A file with a syntax error, or one
// asking for a longer timeout than the process started with, is refused
// with its reason (file:line for a bad value) and the config in force
// keeps serving. With BRIDGE_CONFIG_WATCH, a change to the file is taken
// without a signal.
func TestConfigReloadProcess(t *testing.T) {
	t.Run("SIGHUP", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "config.yaml")
		write := func(content string) {
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		write(modelConfig(60, "alpha"))
		p, addr := startProc(t, "serve", dir, baseEnv("BRIDGE_CONFIG="+path, "BRIDGE_CONFIG_WATCH=0"), gatewayReady,
			"serve", "--demo", "--listen", "127.0.0.1:0", "--nats-listen", "", "--data-dir", filepath.Join(dir, "data"))
		if got := listModels(t, addr); !slices.Equal(got, []string{"alpha"}) {
			t.Fatalf("models at start %v, want [alpha]", got)
		}

		write(modelConfig(60, "beta", "gamma"))
		_ = p.cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, "/v1/models lists beta and gamma after SIGHUP", func() bool {
			return slices.Equal(listModels(t, addr), []string{"beta", "gamma"})
		})
		if status, body := chatModel(t, addr, "beta"); status != 200 || !strings.Contains(body, `mock[preset-beta]: hi`) {
			t.Errorf("beta after the reload: %d %s", status, body)
		}
		if status, body := chatModel(t, addr, "alpha"); status != 404 || !strings.Contains(body, `"code":"model_not_found"`) {
			t.Errorf("alpha after the reload: %d %s, want 404 model_not_found", status, body)
		}

		for _, bad := range []struct{ name, content, reason string }{
			{"bad value", strings.Replace(modelConfig(60, "delta"), "timeout: 60", "timeout: soon", 1),
				`config.yaml:6: model_list[0].litellm_params.timeout \"soon\" is neither a number of seconds`},
			{"longer timeout", modelConfig(3600, "delta"), "longer than the 1m0s this process started with"},
		} {
			write(bad.content)
			_ = p.cmd.Process.Signal(syscall.SIGHUP)
			waitFor(t, bad.name+" refused in the log", func() bool {
				return logLines(p.logs.String(), "config reload refused", bad.reason) == 1
			})
			if got := listModels(t, addr); !slices.Equal(got, []string{"beta", "gamma"}) {
				t.Errorf("%s: models %v, want the config in force, [beta gamma]", bad.name, got)
			}
			if status, body := chatModel(t, addr, "gamma"); status != 200 || !strings.Contains(body, `mock[preset-gamma]: hi`) {
				t.Errorf("%s: gamma answered %d %s", bad.name, status, body)
			}
		}
		if n := logLines(p.logs.String(), "config reloaded", "trigger=SIGHUP", "models=2"); n != 1 {
			t.Errorf("%d lines say the config was reloaded, want 1:\n%s", n, p.logs)
		}
		p.stop(t)
	})
	t.Run("no file", func(t *testing.T) {
		// SIGHUP ends a process by default: with nothing to reload it is
		// taken, and said so.
		dir := t.TempDir()
		p, addr := startProc(t, "serve", dir, baseEnv(), gatewayReady,
			"serve", "--demo", "--listen", "127.0.0.1:0", "--nats-listen", "", "--data-dir", filepath.Join(dir, "data"))
		_ = p.cmd.Process.Signal(syscall.SIGHUP)
		waitFor(t, "the SIGHUP logged", func() bool {
			return logLines(p.logs.String(), "SIGHUP: there is no config file to reload") == 1
		})
		if got := listModels(t, addr); len(got) != 0 {
			t.Errorf("models %v, want none", got)
		}
		p.stop(t)
	})
	t.Run("file watch", func(t *testing.T) {
		dir := t.TempDir()
		path := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(path, []byte(modelConfig(60, "alpha")), 0o644); err != nil {
			t.Fatal(err)
		}
		p, addr := startProc(t, "serve", dir, baseEnv("BRIDGE_CONFIG="+path, "BRIDGE_CONFIG_WATCH=100ms"), gatewayReady,
			"serve", "--demo", "--listen", "127.0.0.1:0", "--nats-listen", "", "--data-dir", filepath.Join(dir, "data"))
		// A ConfigMap update: a new file renamed over the old one.
		next := filepath.Join(dir, "config.yaml.next")
		if err := os.WriteFile(next, []byte(modelConfig(60, "alpha", "beta")), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(next, path); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "/v1/models lists beta after the file changed", func() bool {
			return slices.Equal(listModels(t, addr), []string{"alpha", "beta"})
		})
		if status, body := chatModel(t, addr, "beta"); status != 200 || !strings.Contains(body, `mock[preset-beta]: hi`) {
			t.Errorf("beta after the reload: %d %s", status, body)
		}
		if n := logLines(p.logs.String(), "config reloaded", `trigger="file changed"`); n != 1 {
			t.Errorf("%d lines say the config was reloaded on a change, want 1:\n%s", n, p.logs)
		}
		p.stop(t)
	})
}
