package main

import (
	"embed"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
)

// manPages are the man pages, made from the command tree by cobra's
// generator in a test (TestManPagesCurrent, which fails when they are
// stale): the generator's markdown renderer would otherwise be linked
// into the program, and its tables initialised at every command's start
// (0.5 ms of CPU and ~90 page faults on the way of launcher upgrade).
//
//go:embed man/*.1
var manPages embed.FS

// manCommand writes the man pages: for packagers, so hidden from the
// command list (the README names it).
func (c *cli) manCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "man DIR",
		Short: "write the man pages (launcher.1 and one per command) into DIR",
		Long:  "Write the man pages, launcher.1 and one per command (launcher-upgrade.1, ...),\ninto DIR, made if missing. For packaging: not in launcher --help.",
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usagef("man: want one DIR, got %q", args)
			}
			return nil
		},
		Hidden: true,
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]cobra.Completion, cobra.ShellCompDirective) {
			return nil, cobra.ShellCompDirectiveFilterDirs
		},
		RunE: c.act(func(cmd *cobra.Command, args []string) error {
			if err := writeManPages(args[0]); err != nil {
				return fmt.Errorf("man: %w", err)
			}
			return nil
		}),
	}
}

// writeManPages writes every page of manPages into dir, made if missing.
func writeManPages(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	pages, err := fs.Glob(manPages, "man/*.1")
	if err != nil {
		return err
	}
	for _, p := range pages {
		b, err := manPages.ReadFile(p)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(dir, filepath.Base(p)), b, 0o644); err != nil {
			return err
		}
	}
	return nil
}
