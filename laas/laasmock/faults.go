package laasmock

// This file holds the per-request faults (see "Faults" in the package
// doc): directives in the last user message that make the mock misbehave
// as a real upstream can (hang, stall, reset, truncate, garbage, trickle,
// an error status), for the bridge's fault suite.

import (
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// FaultPrefix starts a fault directive in the text of the last user
// message, as in "laasmock:fault=hang".
const FaultPrefix = "laasmock:"

// Fault kinds, the values of "laasmock:fault=".
const (
	FaultHang     = "hang"     // read the request, never answer
	FaultStall    = "stall"    // 200 headers and half the body, then nothing
	FaultReset    = "reset"    // 200 headers and half the body, then a TCP reset
	FaultTruncate = "truncate" // 200 headers and half the body, then a clean close
	FaultNonJSON  = "nonjson"  // 200 with an HTML body
	FaultTrickle  = "trickle"  // the answer, in ten pieces spread over a duration
)

// nonJSONBody is what FaultNonJSON answers: a proxy's error page.
const nonJSONBody = "<html><body><h1>502 Bad Gateway</h1></body></html>\n"

// fault is a request's parsed directives.
type fault struct {
	kind       string        // a Fault* kind, or "" with status set
	status     int           // "status=": an error status to answer
	times      int           // "status=<code>x<n>": only the first n such requests; 0 every one
	retryAfter string        // "retry-after=": a 429's Retry-After, default "1"
	trickle    time.Duration // "trickle=<duration>"
}

// parseFault reads the directives in text (the last user message): nil
// when there are none, or a message saying why they are invalid.
func parseFault(text string) (*fault, string) {
	var f fault
	found := false
	for _, w := range strings.Fields(text) {
		spec, ok := strings.CutPrefix(w, FaultPrefix)
		if !ok {
			continue
		}
		found = true
		key, val, _ := strings.Cut(spec, "=")
		switch key {
		case "fault":
			switch val {
			case FaultHang, FaultStall, FaultReset, FaultTruncate, FaultNonJSON:
				f.kind = val
			default:
				return nil, fmt.Sprintf("unknown %sfault %q", FaultPrefix, val)
			}
		case "trickle":
			d, err := time.ParseDuration(val)
			if err != nil || d <= 0 {
				return nil, fmt.Sprintf("%strickle=%q is not a positive duration", FaultPrefix, val)
			}
			f.kind, f.trickle = FaultTrickle, d
		case "status":
			code, times, _ := strings.Cut(val, "x")
			s, err := strconv.Atoi(code)
			if err != nil || s < 300 || s > 599 {
				return nil, fmt.Sprintf("%sstatus=%q: the status must be from 300 to 599", FaultPrefix, val)
			}
			f.status = s
			if times != "" {
				if f.times, err = strconv.Atoi(times); err != nil || f.times < 1 {
					return nil, fmt.Sprintf("%sstatus=%q: the count after x must be at least 1", FaultPrefix, val)
				}
			}
		case "retry-after":
			f.retryAfter = val
		default:
			return nil, fmt.Sprintf("unknown directive %s%s", FaultPrefix, key)
		}
	}
	if !found {
		return nil, ""
	}
	if f.kind != "" && f.status != 0 {
		return nil, "a request may carry a fault or a status directive, not both"
	}
	if f.kind == "" && f.status == 0 {
		return nil, "a request with " + FaultPrefix + " directives must name a fault, a trickle or a status"
	}
	if f.retryAfter == "" {
		f.retryAfter = "1"
	}
	return &f, ""
}

// maxFaultBodies is how many bodies with a counted status directive the
// mock remembers; past it, it forgets the body it first saw, which then
// counts from zero again.
const maxFaultBodies = 4096

// statusApplies reports whether a status directive applies to this
// request, whose raw body is body: always without a count; with one, to
// the first n requests with this exact body (among the last
// maxFaultBodies distinct bodies with a count).
func (m *Mock) statusApplies(f *fault, body []byte) bool {
	if f.times == 0 {
		return true
	}
	key := sha256.Sum256(body)
	m.faultMu.Lock()
	defer m.faultMu.Unlock()
	if m.faultSeen == nil {
		m.faultSeen = make(map[[32]byte]int)
	}
	if _, known := m.faultSeen[key]; !known {
		if len(m.faultKeys) < maxFaultBodies {
			m.faultKeys = append(m.faultKeys, key)
		} else {
			delete(m.faultSeen, m.faultKeys[m.faultNext])
			m.faultKeys[m.faultNext] = key
			m.faultNext = (m.faultNext + 1) % maxFaultBodies
		}
	}
	m.faultSeen[key]++
	return m.faultSeen[key] <= f.times
}

// serveFault writes what f asks for, in place of the answer answer; seq
// is the request's log entry. The log, the counters and the access log
// are set before anything is written, as for a normal answer; a hang's
// once its client has gone (status StatusClientClosed).
func (m *Mock) serveFault(w http.ResponseWriter, r *http.Request, start time.Time, seq uint64, hash string, f *fault, answer []byte, inFlight int) {
	half := answer[:len(answer)/2]
	switch f.kind {
	case FaultHang:
		<-r.Context().Done()
		m.finish(seq, StatusClientClosed)
		m.access(start, StatusClientClosed, hash, inFlight)
		return
	case FaultTrickle:
		m.served.Add(1)
	}
	m.finish(seq, http.StatusOK)
	m.access(start, http.StatusOK, hash, inFlight)

	switch f.kind {
	case FaultStall:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(half)
		_ = http.NewResponseController(w).Flush()
		<-r.Context().Done()
	case FaultReset, FaultTruncate:
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		_, _ = fmt.Fprintf(buf, "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: %d\r\n\r\n", len(answer))
		_, _ = buf.Write(half)
		_ = buf.Flush()
		if tc, ok := conn.(*net.TCPConn); ok && f.kind == FaultReset {
			_ = tc.SetLinger(0) // close sends RST, not FIN
		}
		_ = conn.Close()
	case FaultNonJSON:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte(nonJSONBody))
	case FaultTrickle:
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
		w.WriteHeader(http.StatusOK)
		rc := http.NewResponseController(w)
		const pieces = 10
		t := time.NewTimer(f.trickle / pieces)
		defer t.Stop()
		for i := range pieces {
			select {
			case <-t.C:
			case <-r.Context().Done():
				return
			}
			_, _ = w.Write(answer[i*len(answer)/pieces : (i+1)*len(answer)/pieces])
			_ = rc.Flush()
			t.Reset(f.trickle / pieces)
		}
	}
}
