package main

import (
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/queue"
)

// Stream and consumer settings left unset reach queue.Ensure as zero, so a
// process started without them keeps what another process set; set ones
// reach it as given.
func TestQueueConfigFromEnv(t *testing.T) {
	tests := []struct {
		name string
		env  []string // key, value pairs
		want queue.Config
	}{
		{"nothing set", nil, queue.Config{}},
		{"one replica", []string{"BRIDGE_STREAM_REPLICAS", "1"}, queue.Config{Replicas: 1}},
		// The cap is the workers' shared one; the lanes' MaxAckPending is
		// never below it.
		{"cap above the default", []string{"BRIDGE_LAAS_MAX_CONCURRENCY", "5000"}, queue.Config{MaxAckPending: 5000}},
		{
			"everything set",
			[]string{"BRIDGE_STREAM_REPLICAS", "3", "BRIDGE_QUEUE_MAX_MSGS", "500", "BRIDGE_QUEUE_MAX_BYTES", "2097152",
				"BRIDGE_ACK_WAIT", "45s", "BRIDGE_LAAS_MAX_CONCURRENCY", "16"},
			queue.Config{Replicas: 3, MaxMsgs: 500, MaxBytes: 2 << 20, AckWait: 45 * time.Second, MaxAckPending: queue.DefaultMaxAckPending},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clearEnv(t)
			for i := 0; i+1 < len(tc.env); i += 2 {
				t.Setenv(tc.env[i], tc.env[i+1])
			}
			e, err := readEnv()
			if err != nil {
				t.Fatal(err)
			}
			if got := e.queueConfig(); got != tc.want {
				t.Errorf("queueConfig() = %+v, want %+v", got, tc.want)
			}
		})
	}
}
