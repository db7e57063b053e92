// Package docs holds the reference documentation; its only Go file is this
// test, which keeps the links between README.md and the pages here working.
package docs

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	mdLink     = regexp.MustCompile(`\[[^\]]*\]\(([^)\s]+)\)`)
	inlineCode = regexp.MustCompile("`[^`]*`")
	heading    = regexp.MustCompile(`^#{1,6}\s+(.*?)\s*#*\s*$`)
	notSlug    = regexp.MustCompile(`[^\p{L}\p{N}_\- ]`)
	scheme     = regexp.MustCompile(`^[a-z]+:`)
)

// TestMarkdownLinks: every relative link in the repository's Markdown files
// (README.md, docs/, deploy/) names a file that exists, and every #anchor
// names a heading of that file, under GitHub's rules for heading anchors.
func TestMarkdownLinks(t *testing.T) {
	root := ".."
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && (d.Name() == ".git" || d.Name() == "testdata") {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".md") {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found %d Markdown files under %s: the walk is wrong", len(files), root)
	}
	checked := 0
	for _, f := range files {
		for i, line := range prose(t, f) {
			line = inlineCode.ReplaceAllString(line, "")
			for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if scheme.MatchString(target) {
					continue
				}
				checked++
				path, anchor, _ := strings.Cut(target, "#")
				dest := f
				if path != "" {
					dest = filepath.Join(filepath.Dir(f), path)
				}
				info, err := os.Stat(dest)
				if err != nil {
					t.Errorf("%s:%d: %s: %v", f, i+1, target, err)
					continue
				}
				if anchor != "" && (info.IsDir() || !anchors(t, dest)[anchor]) {
					t.Errorf("%s:%d: %s: %s has no heading #%s", f, i+1, target, dest, anchor)
				}
			}
		}
	}
	if checked == 0 {
		t.Fatal("no relative links found: the link pattern is wrong")
	}
}

// prose returns the lines of a Markdown file with fenced code blocks blanked,
// so that line numbers stay right.
func prose(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	fenced := false
	for i, l := range lines {
		if s := strings.TrimSpace(l); strings.HasPrefix(s, "```") || strings.HasPrefix(s, "~~~") {
			fenced = !fenced
			lines[i] = ""
		} else if fenced {
			lines[i] = ""
		}
	}
	return lines
}

// anchors returns the anchors GitHub gives a file's headings: lower case,
// punctuation other than - and _ dropped, spaces as -, and -1, -2, ... after
// a repeated one.
func anchors(t *testing.T, path string) map[string]bool {
	t.Helper()
	seen := map[string]int{}
	out := map[string]bool{}
	for _, l := range prose(t, path) {
		m := heading.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		s := strings.ToLower(strings.ReplaceAll(m[1], "`", ""))
		s = strings.ReplaceAll(notSlug.ReplaceAllString(s, ""), " ", "-")
		if n := seen[s]; n > 0 {
			out[fmt.Sprintf("%s-%d", s, n)] = true
		} else {
			out[s] = true
		}
		seen[s]++
	}
	return out
}
