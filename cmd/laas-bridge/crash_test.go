package main

import (
	"fmt"
	"net/http/httptest"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/laas-bridge/laas-bridge/laas/laasmock"
)

// unsetEnv applies the entries "-KEY" of env: each removes KEY (set by
// baseEnv or startStack) and is itself dropped, so a test sees a default.
func unsetEnv(env []string) []string {
	var unset []string
	for _, kv := range env {
		if key, ok := strings.CutPrefix(kv, "-"); ok {
			unset = append(unset, key+"=")
		}
	}
	return slices.DeleteFunc(env, func(kv string) bool {
		return strings.HasPrefix(kv, "-") || slices.ContainsFunc(unset, func(p string) bool { return strings.HasPrefix(kv, p) })
	})
}

// TestWorkerSIGKILLRecoversWithinAckWait: with the default AckWait (5s,
// BRIDGE_ACK_WAIT unset), the jobs of a worker killed with SIGKILL in the
// middle of its LaaS calls run again on the other workers within about
// AckWait: every one of 150 callers gets its own answer, the slowest within
// 10 s (AckWait + a 300 ms call + headroom for a busy machine; with the old
// 30 s AckWait the killed worker's callers wait over 30 s), and LaaS sees
// each request at most twice (a killed call once more, nothing else again).
func TestWorkerSIGKILLRecoversWithinAckWait(t *testing.T) {
	const (
		requests = 150
		conc     = 24 // two waves of the 12 slots (3 workers x 4)
		bound    = 10 * time.Second
	)
	// The mock runs in the test, so its log names each call's caller.
	mock, err := laasmock.New(laasmock.Config{ProjectCode: "p", APIKey: "k", Latency: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	upstream := httptest.NewServer(mock)
	t.Cleanup(upstream.Close)
	port := freePort(t)
	natsProc := startNATS(t, "nats", t.TempDir(), port)
	s := startStack(t, fmt.Sprintf("nats://127.0.0.1:%d", port), 3, "300ms", "LAAS_BASE_URL="+upstream.URL, "-BRIDGE_ACK_WAIT")
	seen := func() map[string]int {
		n := map[string]int{}
		for _, e := range mock.Log() {
			n[e.LastUser]++
		}
		return n
	}
	out := s.load(t, requests, conc, 0, func() {
		// The first wave of 12 calls is answered, the second is in
		// flight on every worker: kill one in its middle.
		for start := time.Now(); mock.Served() < 12; time.Sleep(10 * time.Millisecond) {
			if time.Since(start) > time.Minute {
				t.Errorf("the mock answered %d calls in a minute, want 12", mock.Served())
				break
			}
		}
		time.Sleep(150 * time.Millisecond)
		t.Logf("SIGKILL worker-0 at %s, %d calls answered", time.Now().UTC().Format("15:04:05.000"), mock.Served())
		_ = s.workers[0].cmd.Process.Signal(syscall.SIGKILL)
	})
	var slowest time.Duration
	for i, o := range out {
		if o.status != 200 || o.content != fmt.Sprintf("mock[h]: caller %d", i) {
			t.Errorf("caller %d: %+v", i, o)
		}
		slowest = max(slowest, o.took)
	}
	t.Logf("slowest caller answered in %s", slowest.Round(time.Millisecond))
	if slowest > bound {
		t.Errorf("the slowest caller waited %s, want at most %s (AckWait 5s + one call)", slowest.Round(time.Millisecond), bound)
	}
	if err := <-s.workers[0].done; err == nil || !strings.Contains(err.Error(), "killed") {
		t.Errorf("worker-0 was not killed: %v", err)
	}
	calls, twice := seen(), 0
	for i := range requests {
		switch n := calls[fmt.Sprintf("caller %d", i)]; {
		case n == 2:
			twice++
		case n != 1:
			t.Errorf("LaaS saw caller %d's request %d times, want 1, or 2 if it was on the killed worker", i, n)
		}
	}
	t.Logf("LaaS calls: %d for %d requests; %d run again", len(mock.Log()), requests, twice)
	if twice == 0 {
		t.Error("no request reached LaaS twice: the test did not kill a worker mid-call")
	}
	for _, p := range []*proc{s.workers[1], s.workers[2], s.gateway, s.mock, natsProc} {
		p.stop(t)
	}
}
