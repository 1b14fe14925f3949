package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/sbps-marshal/sbps-marshal/config"
)

// bridgeMain runs `sbps-marshal bridge <sub>`. Placeholder until the bridge
// package lands; it refuses rather than pretending to bridge.
func bridgeMain(ctx context.Context, sub string, cfg *config.Config, log *slog.Logger, stdout, stderr io.Writer) int {
	fmt.Fprintf(stderr, "sbps-marshal bridge %s: not available in this build\n", sub)
	return 1
}
