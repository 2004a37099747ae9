package main

import (
	"context"
	"fmt"
	"io"
)

func cmdDemo(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return fmt.Errorf("demo: not yet")
}
