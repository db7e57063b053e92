package harness

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// BridgePackage is the laas-bridge command, built when Config.BridgeBin
// is empty.
const BridgePackage = "github.com/laas-bridge/laas-bridge/cmd/laas-bridge"

// bridgeBin returns the absolute path of the laas-bridge binary, building
// it on first use when Config.BridgeBin is empty.
func (h *harness) bridgeBin(ctx context.Context) (string, error) {
	if h.bridge != "" {
		return h.bridge, nil
	}
	if h.cfg.BridgeBin != "" {
		// Absolute: the processes start in the log directory.
		exe, err := filepath.Abs(h.cfg.BridgeBin)
		if err != nil {
			return "", err
		}
		h.bridge = exe
		return exe, nil
	}
	dir, err := os.MkdirTemp("", "laas-bridge-bench-bin")
	if err != nil {
		return "", err
	}
	h.removes = append(h.removes, dir)
	fmt.Fprintf(h.stderr, "bench: building laas-bridge (%s)\n", BridgePackage)
	exe, err := BuildBridge(ctx, dir)
	if err != nil {
		return "", err
	}
	h.bridge = exe
	return exe, nil
}

// BuildBridge builds laas-bridge into dir with `go build`, from the module
// in the working directory, and returns its path.
func BuildBridge(ctx context.Context, dir string) (string, error) {
	exe := filepath.Join(dir, "laas-bridge")
	out, err := exec.CommandContext(ctx, "go", "build", "-o", exe, BridgePackage).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("bench: go build %s (run inside the laas-bridge module, or give --bridge-bin): %w\n%s", BridgePackage, err, out)
	}
	return exe, nil
}
