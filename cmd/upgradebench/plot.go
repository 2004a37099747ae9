package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// plot draws rep with tools/upgradeplot, a module of its own: its plotting
// library (gonum.org/v1/plot and what it pulls in: fonts, image codecs)
// stays out of the launcher's module, whose dependencies every user of
// the library takes on.
func plot(ctx context.Context, rep report, file string, stderr io.Writer) error {
	if len(rep.Runs) == 0 {
		return fmt.Errorf("--plot: no load run to draw (--upgrade-runs=false)")
	}
	out, err := filepath.Abs(file)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp("", "upgradebench-*.json")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	tmp.Close()
	if err := rep.write(tmp.Name()); err != nil {
		return err
	}
	root, err := exec.CommandContext(ctx, "go", "env", "GOMOD").Output()
	if err != nil {
		return fmt.Errorf("--plot: go env GOMOD: %w", err)
	}
	dir := filepath.Join(filepath.Dir(strings.TrimSpace(string(root))), "tools", "upgradeplot")
	cmd := exec.CommandContext(ctx, "go", "run", ".", "-o", out, tmp.Name())
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = stderr, stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("--plot: tools/upgradeplot: %w", err)
	}
	return nil
}
