package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

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
			dir := args[0]
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("man: %w", err)
			}
			// No Title: each page gets its command's (LAUNCHER-UPGRADE).
			header := &doc.GenManHeader{Section: "1", Source: "launcher", Manual: "launcher manual"}
			if err := doc.GenManTree(cmd.Root(), header, dir); err != nil {
				return fmt.Errorf("man: %w", err)
			}
			return nil
		}),
	}
}
