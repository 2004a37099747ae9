package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/launcherd/launcher/supervisor"
)

// completionCommand prints a completion script made by cobra's generators.
// It replaces cobra's default command (one per shell, help on a bad shell
// name) with one whose errors are the command line's.
func (c *cli) completionCommand() *cobra.Command {
	shells := []string{"bash", "zsh", "fish"}
	return &cobra.Command{
		Use:   "completion bash|zsh|fish",
		Short: "print a shell completion script",
		Long: `Print a completion script for bash, zsh or fish. It completes commands,
flags, --handover's values and, for upgrade, the release names in the
running supervisor's --releases directory (file names without one).`,
		Example: `  source <(launcher completion bash)
  launcher completion zsh > "${fpath[1]}/_launcher"
  launcher completion fish > ~/.config/fish/completions/launcher.fish`,
		ValidArgs: shells,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 || !slices.Contains(shells, args[0]) {
				return usagef("completion: want one of %s, got %q", strings.Join(shells, ", "), args)
			}
			return nil
		},
		RunE: c.act(func(cmd *cobra.Command, args []string) error {
			root, w := cmd.Root(), cmd.OutOrStdout()
			var err error
			switch args[0] {
			case "bash":
				err = root.GenBashCompletionV2(w, true)
			case "zsh":
				err = root.GenZshCompletion(w)
			case "fish":
				err = root.GenFishCompletion(w, true)
			}
			if err != nil {
				return fmt.Errorf("completion: %w", err)
			}
			return nil
		}),
	}
}

// completeRelease completes upgrade's argument: the release names of the
// running supervisor's --releases directory, and file names for a path
// (what looks like one, or when no name matches or no supervisor runs).
func (c *cli) completeRelease(cmd *cobra.Command, args []string, toComplete string) ([]cobra.Completion, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	if strings.Contains(toComplete, "/") || strings.HasPrefix(toComplete, ".") || strings.HasPrefix(toComplete, "~") {
		return nil, cobra.ShellCompDirectiveDefault
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), 2*time.Second)
	defer cancel()
	dir, err := c.releases(ctx)
	if err != nil || dir == "" {
		return nil, cobra.ShellCompDirectiveDefault
	}
	// Default: the shell completes file names when none of these matches.
	return releaseNames(dir, toComplete), cobra.ShellCompDirectiveDefault
}

// releaseNames returns the names of the release directories in dir that
// start with prefix, sorted; a symlink to a directory counts.
func releaseNames(dir, prefix string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, prefix) || !supervisor.IsVersion(name) {
			continue
		}
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || !fi.IsDir() {
			continue
		}
		names = append(names, name)
	}
	return names
}
