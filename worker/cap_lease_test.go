package worker

import (
	"context"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/laas-bridge/laas-bridge/schema"
)

// cutProxy forwards TCP to a NATS server until cut: from then on it
// forwards nothing and closes nothing, as a network that drops a worker's
// packets does (the client sees no error; its requests time out).
type cutProxy struct {
	ln     net.Listener
	target string
	cut    chan struct{}
	done   chan struct{}
	once   sync.Once

	mu    sync.Mutex
	conns []net.Conn
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &cutProxy{ln: ln, target: target, cut: make(chan struct{}), done: make(chan struct{})}
	go p.serve()
	t.Cleanup(func() {
		close(p.done)
		ln.Close()
		p.mu.Lock()
		defer p.mu.Unlock()
		for _, c := range p.conns {
			c.Close()
		}
	})
	return p
}

func (p *cutProxy) serve() {
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			in.Close()
			continue
		}
		p.mu.Lock()
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		go p.pipe(out, in)
		go p.pipe(in, out)
	}
}

// pipe copies src to dst until the proxy is cut; then it drops what it
// reads and holds both ends open.
func (p *cutProxy) pipe(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			return
		}
		select {
		case <-p.cut:
			<-p.done
			return
		default:
		}
		if _, err := dst.Write(buf[:n]); err != nil {
			return
		}
	}
}

func (p *cutProxy) Cut() { p.once.Do(func() { close(p.cut) }) }

// TestKVCapCutOffHolderStopsBeforeOthersTake: a process holding every
// slot of the cap is cut off from NATS (its packets dropped, its
// connection not closed, so each write hangs until its timeout). Each of
// its calls is told its slot is lost before the server frees the slot
// for another process: at no moment do both processes' calls hold one
// slot. Renewing the leases one after the other, each write hanging its
// full timeout, the process learnt of the later losses seconds after the
// other process had taken the slots.
//
// The lease TTL is 6 s (AckWait 10 s); the process stops its calls half a
// beat (1 s) before the server may free their slots: that is the margin a
// busy machine must not stall this test's goroutines for.
func TestKVCapCutOffHolderStopsBeforeOthersTake(t *testing.T) {
	const slots = 8
	ackWait := 10 * time.Second
	f := newCapFleet(t)
	proxy := startCutProxy(t, f.q.Server.Addr().String())
	nc, err := nats.Connect("nats://"+proxy.ln.Addr().String(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	cut := f.startOn(t, nc, CapConfig{Max: slots, AckWait: ackWait, Process: "cut"})
	other, _ := f.start(t, CapConfig{Max: slots, AckWait: ackWait, Process: "other"})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m := schema.Model{Alias: "a"}

	var mu sync.Mutex
	var lostAt []time.Time
	for range slots {
		if _, err := cut.Acquire(ctx, m, LaneInteractive, func() {
			mu.Lock()
			defer mu.Unlock()
			lostAt = append(lostAt, time.Now())
		}); err != nil {
			t.Fatal(err)
		}
	}
	// Past a renewal, so the leases were rewritten since their claim.
	renewed := func() bool {
		n := 0
		cut.held.Range(func(k, _ any) bool {
			l := k.(*lease)
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.rev > 0 && l.renewed.After(time.Now().Add(-cut.beat)) {
				n++
			}
			return true
		})
		return n == slots
	}
	time.Sleep(cut.beat + cut.beat/2)
	waitUntil(t, "the cut process's leases to be renewed", renewed)
	proxy.Cut()

	var took atomic.Pointer[time.Time]
	got := make(chan struct{}, slots)
	for range slots {
		go func() {
			if _, err := other.Acquire(ctx, m, LaneInteractive, nil); err != nil {
				t.Error(err)
				return
			}
			now := time.Now()
			took.CompareAndSwap(nil, &now)
			got <- struct{}{}
		}()
	}
	for range slots {
		select {
		case <-got:
		case <-ctx.Done():
			t.Fatal("the cut process's slots never came back")
		}
	}
	first := *took.Load()
	mu.Lock()
	defer mu.Unlock()
	if len(lostAt) != slots {
		t.Fatalf("%d of the cut process's %d calls were told their slot was lost by the time the other process held every slot", len(lostAt), slots)
	}
	for i, at := range lostAt {
		if !at.Before(first) {
			t.Errorf("the cut process's call %d was told its slot was lost %s after the other process took a slot", i, at.Sub(first).Round(time.Millisecond))
		}
	}
	t.Logf("last loss told %s before the other process took the first slot", first.Sub(lostAt[len(lostAt)-1]).Round(time.Millisecond))
}
