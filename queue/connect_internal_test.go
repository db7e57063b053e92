package queue

import "testing"

func TestRedactURL(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{"empty", "", ""},
		{"no credentials", "nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"user and password", "nats://bridge:s3cret@nats.internal:4222", "nats://[redacted]@nats.internal:4222"},
		{"token", "nats://s3cret@nats.internal:4222", "nats://[redacted]@nats.internal:4222"},
		{"tls scheme", "tls://bridge:s3cret@nats.internal:4222", "tls://[redacted]@nats.internal:4222"},
		{"websocket scheme", "wss://bridge:s3cret@nats.internal/ws", "wss://[redacted]@nats.internal/ws"},
		{"no scheme", "bridge:s3cret@nats.internal:4222", "[redacted]@nats.internal:4222"},
		{"at sign in password", "nats://bridge:s3c@ret@nats.internal:4222", "nats://[redacted]@nats.internal:4222"},
		{"scheme-like text in password", "nats://bridge:a://b@nats.internal:4222", "nats://[redacted]@nats.internal:4222"},
		{
			"every server of a list",
			"nats://a:pw1@n1:4222,nats://n2:4222,tls://c:pw3@n3:4222,d:pw4@n4:4222",
			"nats://[redacted]@n1:4222,nats://n2:4222,tls://[redacted]@n3:4222,[redacted]@n4:4222",
		},
		{
			"list with spaces",
			"nats://a:pw1@n1:4222, nats://b:pw2@n2:4222",
			"nats://[redacted]@n1:4222, nats://[redacted]@n2:4222",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := redactURL(tc.in); got != tc.want {
				t.Errorf("redactURL(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}
