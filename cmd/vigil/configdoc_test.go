package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// repoRoot is the repository root, seen from cmd/vigil.
const repoRoot = "../.."

// noEnvTwins are the commands whose flags have no VIGIL_* twin.
var noEnvTwins = map[string]bool{"bench rtsp-sink": true}

// cliCommands lists every command path that takes flags: each top-level
// command, and the subcommands of those that have them.
func cliCommands() []string {
	var out []string
	for _, c := range commands() {
		switch c.name {
		case "bench":
			for _, l := range strings.Split(benchUsage, "\n") {
				if f := strings.Fields(l); strings.HasPrefix(l, "  ") && len(f) > 1 {
					out = append(out, "bench "+f[0])
				}
			}
			out = append(out, "bench rtsp-sink") // hidden: bench rtsp's baseline process
		case "meter":
			for _, sub := range slices.Sorted(maps.Keys(meterSubcommands)) {
				out = append(out, "meter "+sub)
			}
		case "index":
			out = append(out, "index rebuild")
		case "cluster":
			out = append(out, "cluster up")
		default:
			out = append(out, c.name)
		}
	}
	return out
}

var (
	helpFlagLine = regexp.MustCompile(`^  -(\S+)`)
	helpDefault  = regexp.MustCompile(` \(default (.*)\)$`)
)

// cliFlags returns the flags `vigil CMD --help` lists, by command path, and
// for each the docs/config.md row it needs (for a failure message).
func cliFlags(t *testing.T) (map[string][]string, map[string]string) {
	t.Helper()
	out, rows := map[string][]string{}, map[string]string{}
	for _, cmd := range cliCommands() {
		var help bytes.Buffer
		err := run(context.Background(), append(strings.Fields(cmd), "--help"), &help, &help)
		if err != nil && !errors.Is(err, flag.ErrHelp) {
			t.Fatalf("vigil %s --help: %v\n%s", cmd, err, help.String())
		}
		var names []string
		lines := strings.Split(help.String(), "\n")
		for i, l := range lines {
			m := helpFlagLine.FindStringSubmatch(l)
			if m == nil {
				continue
			}
			names = append(names, m[1])
			var usage []string
			for _, u := range lines[i+1:] {
				if !strings.HasPrefix(u, "    \t") {
					break
				}
				usage = append(usage, strings.TrimSpace(u))
			}
			text, def := strings.Join(usage, " "), ""
			if d := helpDefault.FindStringSubmatchIndex(text); d != nil {
				text, def = text[:d[0]], "`"+strings.Trim(text[d[2]:d[3]], `"`)+"`"
			}
			rows[cmd+" "+m[1]] = fmt.Sprintf("| `--%s` | `VIGIL_%s` | %s | %s |", m[1], envName(m[1]), def, text)
		}
		if len(names) == 0 {
			t.Fatalf("vigil %s --help lists no flags:\n%s", cmd, help.String())
		}
		out[cmd] = names
	}
	return out, rows
}

// configDoc is what docs/config.md lists.
type configDoc struct {
	flags   map[string]map[string]string // command → flag → env column
	envOnly []string                     // the "Environment only" variables
}

var (
	docSection = regexp.MustCompile("^## `vigil ([a-z -]+)`")
	docCode    = regexp.MustCompile("`([^`]+)`")
	docEnvName = regexp.MustCompile(`^VIGIL_[A-Z0-9_]+$`)
)

func readConfigDoc(t *testing.T) configDoc {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "config.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := configDoc{flags: map[string]map[string]string{}}
	section, inherits := "", map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		l := sc.Text()
		if m := docSection.FindStringSubmatch(l); m != nil {
			section = m[1]
			if doc.flags[section] != nil {
				t.Fatalf("docs/config.md: section vigil %s twice", section)
			}
			doc.flags[section] = map[string]string{}
			continue
		}
		if strings.HasPrefix(l, "## ") {
			section = ""
			continue
		}
		if m := regexp.MustCompile("^Every flag of `vigil ([a-z ]+)` too").FindStringSubmatch(l); m != nil && section != "" {
			inherits[section] = m[1]
		}
		if !strings.HasPrefix(l, "| ") {
			continue
		}
		cells := strings.Split(strings.Trim(l, "|"), " | ")
		first := strings.TrimSpace(cells[0])
		switch {
		case section != "" && strings.HasPrefix(first, "`-"):
			name := strings.TrimLeft(strings.Trim(first, "`"), "-")
			if _, dup := doc.flags[section][name]; dup {
				t.Errorf("docs/config.md: vigil %s lists --%s twice", section, name)
			}
			doc.flags[section][name] = strings.Trim(strings.TrimSpace(cells[1]), "`")
		case section == "" && strings.HasPrefix(first, "`VIGIL_"):
			for _, m := range docCode.FindAllStringSubmatch(first, -1) {
				if !docEnvName.MatchString(m[1]) {
					t.Errorf("docs/config.md: %q is not a variable name", m[1])
				}
				doc.envOnly = append(doc.envOnly, m[1])
			}
		}
	}
	for sec, parent := range inherits {
		for name, env := range doc.flags[parent] {
			if _, ok := doc.flags[sec][name]; !ok {
				doc.flags[sec][name] = env
			}
		}
	}
	return doc
}

// TestConfigDocumented: docs/config.md lists exactly the flags each command
// registers, each with its environment twin, and exactly the VIGIL_*
// variables the code and the scripts read.
func TestConfigDocumented(t *testing.T) {
	doc := readConfigDoc(t)
	cli, rows := cliFlags(t)
	twins := map[string]bool{}
	for cmd, names := range cli {
		documented, ok := doc.flags[cmd]
		if !ok {
			t.Errorf("docs/config.md has no section ## `vigil %s`", cmd)
			continue
		}
		for _, name := range names {
			env, ok := documented[name]
			want := "VIGIL_" + envName(name)
			if noEnvTwins[cmd] {
				want = "(none)"
			} else {
				twins[want] = true
			}
			switch {
			case !ok:
				t.Errorf("vigil %s --%s is not in docs/config.md; its row:\n%s", cmd, name, rows[cmd+" "+name])
			case env != want:
				t.Errorf("docs/config.md: vigil %s --%s: environment %q, want %q", cmd, name, env, want)
			}
		}
		for name := range documented {
			if !slices.Contains(names, name) {
				t.Errorf("docs/config.md lists vigil %s --%s, which the command does not have", cmd, name)
			}
		}
	}
	for cmd := range doc.flags {
		if _, ok := cli[cmd]; !ok {
			t.Errorf("docs/config.md documents vigil %s, which does not exist", cmd)
		}
	}

	read := envRead(t)
	for v, where := range read {
		if !twins[v] && !slices.Contains(doc.envOnly, v) {
			t.Errorf("%s reads %s, which docs/config.md does not list", where, v)
		}
	}
	for _, v := range doc.envOnly {
		if _, ok := read[v]; !ok {
			t.Errorf("docs/config.md lists %s, which nothing reads", v)
		}
	}
}

var envRef = regexp.MustCompile(`VIGIL_[A-Z0-9_]+`)

// envRead returns the VIGIL_* names in the string literals of the module's
// Go code (tests aside) and in its shell scripts, each with one file that
// names it. A name built at run time (VIGIL_CLUSTER_${l}_PORTS) ends in _
// and is skipped; its expansions are listed where it is used.
func envRead(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	add := func(s, file string) {
		for _, v := range envRef.FindAllString(s, -1) {
			if !strings.HasSuffix(v, "_") {
				out[v] = file
			}
		}
	}
	err := filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(repoRoot, path)
		if d.IsDir() {
			// Hidden folders hold no code (.git, .ci is a script: read below);
			// a nested module (deploy/validate) has only tests.
			if rel != "." && strings.HasPrefix(d.Name(), ".") && d.Name() != ".ci" {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && rel != "." {
				return filepath.SkipDir
			}
			return nil
		}
		switch {
		case strings.HasSuffix(path, "_test.go"):
		case strings.HasSuffix(path, ".go"):
			f, err := parser.ParseFile(token.NewFileSet(), path, nil, parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			ast.Inspect(f, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING {
					if s, err := strconv.Unquote(lit.Value); err == nil {
						add(s, rel)
					}
				}
				return true
			})
		case strings.HasSuffix(path, ".sh") || rel == filepath.Join(".ci", "run"):
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			add(string(b), rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("found no VIGIL_* variable in the code")
	}
	return out
}
