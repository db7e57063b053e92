package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestPackageLayering keeps the import rules: schema needs only the
// standard library; bridge and worker never import each other.
func TestPackageLayering(t *testing.T) {
	const mod = "github.com/laas-bridge/laas-bridge/"
	deps := func(pkg string) []string {
		out, err := exec.Command("go", "list", "-deps", mod+pkg).Output()
		if err != nil {
			t.Fatalf("go list -deps %s: %v", pkg, err)
		}
		return strings.Fields(string(out))
	}
	for _, d := range deps("schema") {
		first, _, _ := strings.Cut(d, "/")
		if strings.Contains(first, ".") && d != mod+"schema" {
			t.Errorf("schema imports %s; it may use only the standard library", d)
		}
	}
	for pkg, banned := range map[string]string{"bridge": mod + "worker", "worker": mod + "bridge"} {
		for _, d := range deps(pkg) {
			if strings.HasPrefix(d, banned) {
				t.Errorf("%s imports %s", pkg, d)
			}
		}
	}
}
