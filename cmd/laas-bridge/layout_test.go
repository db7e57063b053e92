package main

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestPackageLayering keeps the import rules: schema needs only the
// standard library and nothing under schema/ imports NATS; the admission
// core knows nothing of HTTP frameworks; bridge and worker never import
// each other.
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
	out, err := exec.Command("go", "list", mod+"schema/...").Output()
	if err != nil {
		t.Fatalf("go list schema/...: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		for _, d := range deps(strings.TrimPrefix(pkg, mod)) {
			if strings.HasPrefix(d, "github.com/nats-io/") {
				t.Errorf("%s imports %s: the queue's runtime lives in package queue, not under schema", pkg, d)
			}
		}
	}
	for pkg, banned := range map[string][]string{
		"bridge":    {mod + "worker"},
		"worker":    {mod + "bridge"},
		"admission": {"github.com/labstack/echo", mod + "bridge", mod + "worker"},
		"keys":      {"github.com/labstack/echo", mod + "bridge", mod + "worker", mod + "admission"},
	} {
		for _, d := range deps(pkg) {
			for _, b := range banned {
				if strings.HasPrefix(d, b) {
					t.Errorf("%s imports %s", pkg, d)
				}
			}
		}
	}
}

// TestCodeSize keeps files and the request path readable: no non-test Go
// file over 600 lines, and no function over 80 lines in the packages a
// request goes through.
func TestCodeSize(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	requestPath := []string{"admission", "bridge", "worker", "laas", "batch", "keys"}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		f, err := parser.ParseFile(fset, path, nil, 0)
		if err != nil {
			return err
		}
		if n := fset.Position(f.End()).Line; n > 600 {
			t.Errorf("%s has %d lines; split it by concern (at most 600)", rel, n)
		}
		top, _, _ := strings.Cut(filepath.ToSlash(rel), "/")
		if !slices.Contains(requestPath, top) {
			return nil
		}
		for _, decl := range f.Decls {
			if fn, ok := decl.(*ast.FuncDecl); ok {
				if n := fset.Position(fn.End()).Line - fset.Position(fn.Pos()).Line + 1; n > 80 {
					t.Errorf("%s: %s is %d lines; at most 80 in the request path", rel, fn.Name.Name, n)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
