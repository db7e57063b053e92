package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestGatewayMemoryBudgetProcess: 40 callers upload 60 MiB each at once
// to a gateway process with a 512 MiB body budget. Each body is sent up to
// its last MiB and held there until every caller has either been refused
// or had that much read; so exactly the 8 bodies that fit (8 x 60 MiB <=
// 512 MiB) are read, and the other 32 get 503 server_overloaded with
// Retry-After without sending their bodies (Expect: 100-continue). The 8
// are then finished and answered (404 model_not_found: the gateway has no
// models, the cheapest full answer to a read body). The gateway's peak RSS
// (VmHWM) stays under the budget plus 256 MiB.
func TestGatewayMemoryBudgetProcess(t *testing.T) {
	const (
		mib      = 1 << 20
		budget   = 512 * mib
		bodySize = 60 * mib
		callers  = 40
		fits     = budget / bodySize // 8
		margin   = 256 * mib
	)
	srv := listeningNATS(t)
	// GOMEMLIMIT as a cgroup limit would set it (memlimit.go); the budget
	// is given, not derived.
	gw, addr := startProc(t, "gateway", t.TempDir(), baseEnv("NATS_URL="+srv.ClientURL(), "BRIDGE_MAX_INFLIGHT_BYTES="+strconv.Itoa(budget),
		"GOMEMLIMIT=640MiB", "BRIDGE_MICRO_SUBJECT=off"), gatewayReady, "gateway", "--listen", "127.0.0.1:0")
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`msg="memory limit" .*gomemlimit_bytes=671088640 source=GOMEMLIMIT`),
		regexp.MustCompile(`msg="request body budget" .*max_inflight_bytes=536870912 `),
	} {
		if !want.MatchString(gw.logs.String()) {
			t.Fatalf("the gateway's startup log has no line matching %s", want)
		}
	}

	head := []byte(`{"model":"no-such-model","messages":[{"role":"user","content":"big"}]}`)
	body := append(head, bytes.Repeat([]byte(" "), bodySize-len(head))...)
	tr := &http.Transport{ExpectContinueTimeout: time.Minute, MaxIdleConnsPerHost: callers}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 3 * time.Minute}

	type result struct {
		status     int
		code       string
		retryAfter string
		err        error
	}
	results := make(chan result, callers)
	resolved := make(chan bool, callers) // true: most of the body was read; false: answered without it
	release := make(chan struct{})
	last := bodySize - mib
	for range callers {
		go func() {
			pr, pw := io.Pipe()
			var once sync.Once
			resolve := func(read bool) { once.Do(func() { resolved <- read }) }
			go func() {
				if _, err := pw.Write(body[:last]); err != nil {
					return // refused: the transport closed the body unread
				}
				resolve(true)
				<-release
				_, _ = pw.Write(body[last:])
				_ = pw.Close()
			}()
			req, _ := http.NewRequest("POST", "http://"+addr+"/v1/chat/completions", pr)
			req.ContentLength = bodySize
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("Expect", "100-continue")
			resp, err := hc.Do(req)
			if err != nil {
				resolve(false)
				results <- result{err: err}
				return
			}
			defer resp.Body.Close()
			resolve(false)
			var e struct {
				Error struct{ Code string } `json:"error"`
			}
			data, _ := io.ReadAll(resp.Body)
			_ = json.Unmarshal(data, &e)
			results <- result{status: resp.StatusCode, code: e.Error.Code, retryAfter: resp.Header.Get("Retry-After")}
		}()
	}
	read := 0
	timeout := time.After(2 * time.Minute)
	for range callers {
		select {
		case r := <-resolved:
			if r {
				read++
			}
		case <-timeout:
			t.Fatalf("after 2 minutes, not every caller was refused or read (%d read)", read)
		}
	}
	close(release)
	var answered, overloaded int
	for range callers {
		r := <-results
		switch {
		case r.err != nil:
			t.Errorf("a caller got no answer: %v", r.err)
		case r.status == http.StatusServiceUnavailable && r.code == "server_overloaded" && r.retryAfter == "1":
			overloaded++
		case r.status == http.StatusNotFound && r.code == "model_not_found":
			answered++
		default:
			t.Errorf("a caller got %d %q (Retry-After %q)", r.status, r.code, r.retryAfter)
		}
	}
	hwm := vmHWM(t, gw.cmd.Process.Pid)
	t.Logf("%d callers: %d read and answered, %d refused with 503; gateway peak RSS (VmHWM) %d MiB; body budget %d MiB",
		callers, answered, overloaded, hwm/mib, budget/mib)
	if read != fits || answered != fits || overloaded != callers-fits {
		t.Errorf("want %d bodies read and answered and %d refused, got %d read, %d answered, %d refused", fits, callers-fits, read, answered, overloaded)
	}
	if hwm > budget+margin {
		t.Errorf("gateway peak RSS %d MiB is over the %d MiB budget plus %d MiB", hwm/mib, budget/mib, margin/mib)
	}
}

// vmHWM is a process's peak resident set size, in bytes, from /proc.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatal("no VmHWM in /proc status")
	return 0
}
