package main

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/spf13/cobra"
)

func TestCompletionScripts(t *testing.T) {
	tests := []struct{ shell, want string }{
		{"bash", "# bash completion V2 for launcher"},
		{"zsh", "#compdef launcher"},
		{"fish", "complete -c launcher"},
	}
	for _, tt := range tests {
		t.Run(tt.shell, func(t *testing.T) {
			code, stdout, stderr := runCLI(t, newCLI, "completion", tt.shell)
			if code != 0 || stderr != "" {
				t.Fatalf("exit %d, stderr %q; want 0 and nothing", code, stderr)
			}
			if !strings.Contains(stdout, tt.want) || !strings.Contains(stdout, "__complete") {
				t.Errorf("completion %s: no %q calling __complete in %d bytes", tt.shell, tt.want, len(stdout))
			}
		})
	}
}

// releasesDir makes a releases directory: release directories, a symlink
// to one, and entries that are no release.
func releasesDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"v1", "v10", "v2", "2024.05.1+b", ".tmp"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "notes.txt"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("v2", filepath.Join(dir, "latest")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("gone", filepath.Join(dir, "dangling")); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestReleaseNames(t *testing.T) {
	dir := releasesDir(t)
	tests := []struct {
		dir, prefix string
		want        []string
	}{
		{dir, "", []string{"2024.05.1+b", "latest", "v1", "v10", "v2"}},
		{dir, "v1", []string{"v1", "v10"}},
		{dir, "v3", nil},
		{dir, ".", nil},
		{filepath.Join(dir, "missing"), "", nil},
	}
	for _, tt := range tests {
		if got := releaseNames(tt.dir, tt.prefix); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("releaseNames(%q, %q) = %q; want %q", tt.dir, tt.prefix, got, tt.want)
		}
	}
}

// complete runs cobra's completion request for args (the last one being
// typed) and returns the completions and the directive.
func complete(t *testing.T, mk func(stdout, stderr io.Writer) *cli, args ...string) ([]string, cobra.ShellCompDirective) {
	t.Helper()
	code, stdout, stderr := runCLI(t, mk, append([]string{cobra.ShellCompRequestCmd}, args...)...)
	if code != 0 {
		t.Fatalf("__complete %q: exit %d, stderr %q", args, code, stderr)
	}
	lines := strings.Split(strings.TrimSuffix(stdout, "\n"), "\n")
	last := lines[len(lines)-1]
	d, err := strconv.Atoi(strings.TrimPrefix(last, ":"))
	if err != nil || !strings.HasPrefix(last, ":") {
		t.Fatalf("__complete %q: no directive in %q", args, stdout)
	}
	var names []string
	for _, l := range lines[:len(lines)-1] {
		name, _, _ := strings.Cut(l, "\t")
		names = append(names, name)
	}
	return names, cobra.ShellCompDirective(d)
}

func TestCompleteUpgrade(t *testing.T) {
	dir := releasesDir(t)
	// A supervisor runs with --releases dir, asked at the state dir given.
	running := func(stateDir *string) func(stdout, stderr io.Writer) *cli {
		return func(stdout, stderr io.Writer) *cli {
			c := newCLI(stdout, stderr)
			c.releases = func(context.Context) (string, error) {
				*stateDir = c.stateDirOrDefault()
				return dir, nil
			}
			return c
		}
	}
	var none call
	stopped := fakeCLI(&none, nil) // releases: ErrNotRunning
	var asked string
	tests := []struct {
		name string
		mk   func(stdout, stderr io.Writer) *cli
		args []string
		want []string
		dir  cobra.ShellCompDirective
	}{
		{"names", running(&asked), []string{"upgrade", ""}, []string{"2024.05.1+b", "latest", "v1", "v10", "v2"}, cobra.ShellCompDirectiveDefault},
		{"prefix", running(&asked), []string{"upgrade", "--wait", "v1"}, []string{"v1", "v10"}, cobra.ShellCompDirectiveDefault},
		{"a path", running(&asked), []string{"upgrade", "./"}, nil, cobra.ShellCompDirectiveDefault},
		{"no second argument", running(&asked), []string{"upgrade", "v1", ""}, nil, cobra.ShellCompDirectiveNoFileComp},
		{"no supervisor: files", stopped, []string{"upgrade", "v"}, nil, cobra.ShellCompDirectiveDefault},
		{"handover", stopped, []string{"start", "--handover", ""}, []string{"steer", "migrate", "close"}, cobra.ShellCompDirectiveNoFileComp},
		{"service arguments", stopped, []string{"start", "--listen", "a:1", "--", "/srv/hello", "--hand"}, nil, cobra.ShellCompDirectiveDefault},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, d := complete(t, tt.mk, tt.args...)
			if !reflect.DeepEqual(got, tt.want) || d != tt.dir {
				t.Errorf("completions %q, directive %d; want %q, %d", got, d, tt.want, tt.dir)
			}
		})
	}
	t.Run("state dir", func(t *testing.T) {
		complete(t, running(&asked), "upgrade", "--state-dir", "/s", "")
		if asked != "/s" {
			t.Errorf("asked the supervisor of %q; want %q", asked, "/s")
		}
	})
	t.Run("status", func(t *testing.T) {
		// The real lookup: with no supervisor running, files.
		got, d := complete(t, newCLI, "upgrade", "--state-dir", t.TempDir(), "v")
		if got != nil || d != cobra.ShellCompDirectiveDefault {
			t.Errorf("completions %q, directive %d; want none, %d", got, d, cobra.ShellCompDirectiveDefault)
		}
	})
}

// Flag descriptions in completions show no backticks: in --help they
// name a flag's value.
func TestCompleteFlagsWithoutBackticks(t *testing.T) {
	for _, args := range [][]string{{"upgrade", "--"}, {"start", "--"}} {
		var none call
		_, stdout, _ := runCLI(t, fakeCLI(&none, nil), append([]string{cobra.ShellCompRequestCmd}, args...)...)
		if strings.Contains(stdout, "`") || !strings.Contains(stdout, "--state-dir\t") {
			t.Errorf("__complete %q:\n%s\nwant descriptions without backticks", args, stdout)
		}
	}
}
