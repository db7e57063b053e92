package harness

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"time"
)

// child is a started process; its output goes to a log file.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}

	mu      sync.Mutex
	first   []string      // the first output lines, for waitFor
	changed chan struct{} // closed and replaced when a line is added to first
}

// firstLines is how many output lines a child keeps for waitFor.
const firstLines = 500

// startBridge runs the laas-bridge binary with args (see start).
func (h *harness) startBridge(ctx context.Context, name string, env []string, ready *regexp.Regexp, args ...string) (*child, string, error) {
	exe, err := h.bridgeBin(ctx)
	if err != nil {
		return nil, "", err
	}
	return h.start(exe, name, env, ready, args...)
}

// startMock starts a LaaS mock (`laas-bridge mock-laas`) answering after
// latency and returns its URL.
func (h *harness) startMock(ctx context.Context, name string, latency time.Duration) (string, error) {
	_, u, err := h.startBridge(ctx, name, []string{"PATH=" + h.getenv("PATH")}, mockReady,
		"mock-laas", "--listen", "127.0.0.1:0", "--latency", latency.String())
	return u, err
}

// startBaseline starts the baseline proxy (`Self baseline-proxy`) on the
// mock at mockURL and returns it and its URL.
func (h *harness) startBaseline(mockURL string) (*child, string, error) {
	self := h.cfg.Self
	if self == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, "", err
		}
		self = exe
	}
	return h.start(self, "baseline-proxy", h.laasEnv(mockURL), baselineReady, "baseline-proxy", "--listen", "127.0.0.1:0")
}

// start runs exe with args, its output in <dir>/<name>.log, and waits
// until a line matches ready; it returns ready's last submatch.
func (h *harness) start(exe, name string, env []string, ready *regexp.Regexp, args ...string) (*child, string, error) {
	logf, err := os.Create(filepath.Join(h.dir, name+".log"))
	if err != nil {
		return nil, "", err
	}
	cmd := exec.Command(exe, args...)
	cmd.Dir, cmd.Env = h.dir, env
	out, err := cmd.StderrPipe()
	if err != nil {
		logf.Close()
		return nil, "", err
	}
	cmd.Stdout = logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, "", fmt.Errorf("bench: start %s: %w", name, err)
	}
	ch := &child{name: name, cmd: cmd, done: make(chan struct{}), changed: make(chan struct{})}
	h.children = append(h.children, ch)
	go func() {
		defer close(ch.done)
		defer logf.Close()
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			_, _ = logf.WriteString(line + "\n")
			ch.keep(line)
		}
		_ = cmd.Wait()
	}()
	m, err := ch.waitFor(ready, time.Minute)
	if err != nil {
		return nil, "", fmt.Errorf("%w (log: %s)", err, filepath.Join(h.dir, name+".log"))
	}
	return ch, m, nil
}

// keep adds line to the first lines, if there is room.
func (c *child) keep(line string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.first) < firstLines {
		c.first = append(c.first, line)
		close(c.changed)
		c.changed = make(chan struct{})
	}
}

// waitFor waits for an output line matching re and returns its last submatch.
func (c *child) waitFor(re *regexp.Regexp, timeout time.Duration) (string, error) {
	deadline := time.After(timeout)
	for seen := 0; ; {
		c.mu.Lock()
		lines, changed := c.first[seen:], c.changed
		seen = len(c.first)
		c.mu.Unlock()
		for _, line := range lines {
			if m := re.FindStringSubmatch(line); m != nil {
				return m[len(m)-1], nil
			}
		}
		select {
		case <-changed:
		case <-c.done:
			c.mu.Lock()
			rest := c.first[seen:]
			c.mu.Unlock()
			for _, line := range rest {
				if m := re.FindStringSubmatch(line); m != nil {
					return m[len(m)-1], nil
				}
			}
			return "", fmt.Errorf("bench: %s exited before it was ready", c.name)
		case <-deadline:
			return "", fmt.Errorf("bench: %s not ready within %s", c.name, timeout)
		}
	}
}

// stopAll stops the started processes, last first, with SIGTERM and then,
// after 30s, SIGKILL.
func (h *harness) stopAll() {
	for i := len(h.children) - 1; i >= 0; i-- {
		c := h.children[i]
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.done:
		case <-time.After(30 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.done
		}
	}
	h.children = nil
}
