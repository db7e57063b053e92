package schema_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/laas-bridge/laas-bridge/schema"
)

const secretValue = "sk-laas-hunter2"

func TestSecretFormatting(t *testing.T) {
	s := schema.Secret(secretValue)
	type config struct {
		Project schema.Secret
		APIKey  schema.Secret `json:"api_key"`
		Base    string
	}
	cfg := config{Project: s, APIKey: s, Base: "https://api-laas.wanted.co.kr"}

	tests := []struct {
		name string
		got  string
		want string
	}{
		{"String", s.String(), "[redacted]"},
		{"GoString", s.GoString(), "[redacted]"},
		{"%v", fmt.Sprintf("%v", s), "[redacted]"},
		{"%+v", fmt.Sprintf("%+v", s), "[redacted]"},
		{"%#v", fmt.Sprintf("%#v", s), "[redacted]"},
		{"%s", fmt.Sprintf("%s", s), "[redacted]"},
		{"%q", fmt.Sprintf("%q", s), `"[redacted]"`},
		{"Sprint", fmt.Sprint(s), "[redacted]"},
		{"Sprintln", fmt.Sprintln(s), "[redacted]\n"},
		{"slice %v", fmt.Sprintf("%v", []schema.Secret{s, ""}), "[[redacted] ]"},
		{"struct %+v", fmt.Sprintf("%+v", cfg), "{Project:[redacted] APIKey:[redacted] Base:https://api-laas.wanted.co.kr}"},
		{"pointer to struct %+v", fmt.Sprintf("%+v", &cfg), "&{Project:[redacted] APIKey:[redacted] Base:https://api-laas.wanted.co.kr}"},
		{"struct %#v", fmt.Sprintf("%#v", cfg), `schema_test.config{Project:[redacted], APIKey:[redacted], Base:"https://api-laas.wanted.co.kr"}`},
		{"json struct", marshal(t, cfg), `{"Project":"[redacted]","api_key":"[redacted]","Base":"https://api-laas.wanted.co.kr"}`},
		{"json pointer field", marshal(t, struct{ K *schema.Secret }{&s}), `{"K":"[redacted]"}`},
		{"json map value", marshal(t, map[string]schema.Secret{"k": s}), `{"k":"[redacted]"}`},
		{"LogValue", s.LogValue().String(), "[redacted]"},
		{"Reveal", s.Reveal(), secretValue},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestSecretEmpty(t *testing.T) {
	var s schema.Secret
	tests := []struct {
		name string
		got  string
		want string
	}{
		{"String", s.String(), ""},
		{"GoString", s.GoString(), ""},
		{"%v", fmt.Sprintf("%v", s), ""},
		{"%#v", fmt.Sprintf("%#v", s), ""},
		{"json", marshal(t, struct{ K schema.Secret }{s}), `{"K":""}`},
		{"Reveal", s.Reveal(), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Errorf("got %q, want %q", tc.got, tc.want)
			}
		})
	}
}

func TestSecretSlog(t *testing.T) {
	s := schema.Secret(secretValue)
	removeTime := func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}
	tests := []struct {
		name    string
		handler func(*bytes.Buffer) slog.Handler
		want    string
	}{
		{
			name: "text",
			handler: func(b *bytes.Buffer) slog.Handler {
				return slog.NewTextHandler(b, &slog.HandlerOptions{ReplaceAttr: removeTime})
			},
			want: "level=INFO msg=start api_key=[redacted] empty=\"\" laas.project=[redacted] cfg={Key:[redacted]}\n",
		},
		{
			name: "json",
			handler: func(b *bytes.Buffer) slog.Handler {
				return slog.NewJSONHandler(b, &slog.HandlerOptions{ReplaceAttr: removeTime})
			},
			want: `{"level":"INFO","msg":"start","api_key":"[redacted]","empty":"","laas":{"project":"[redacted]"},"cfg":{"Key":"[redacted]"}}` + "\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(tc.handler(&buf))
			log.Info("start", "api_key", s, "empty", schema.Secret(""),
				slog.Group("laas", "project", s), "cfg", struct{ Key schema.Secret }{s})
			got := buf.String()
			if strings.Contains(got, secretValue) {
				t.Errorf("log output %q contains the secret", got)
			}
			if got != tc.want {
				t.Errorf("log output =\n\t%q\nwant\n\t%q", got, tc.want)
			}
		})
	}
}

func TestSecretJSONDoesNotRoundTrip(t *testing.T) {
	// A redacted secret decodes as the literal "[redacted]": Secret is for
	// output only, never for reading credentials back from JSON it wrote.
	var back struct{ K schema.Secret }
	if err := json.Unmarshal([]byte(marshal(t, struct{ K schema.Secret }{secretValue})), &back); err != nil {
		t.Fatal(err)
	}
	if back.K.Reveal() != "[redacted]" {
		t.Errorf("decoded secret = %q, want the redaction marker", back.K.Reveal())
	}
}
