package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/doctor"
)

// doctorOptions are the doctor's options; tests point Mountinfo at a
// fixture (the rig's mount is a plain directory).
var doctorOptions = doctor.Options{}

// doctorMain runs `sbps-marshal doctor`: one row per dependency of the agent
// on this node. cfgErr is the error loading the configuration gave (cfg is
// then nil): doctor reports it as a row instead of stopping. Exit status 0
// when no row failed (warnings allowed), 1 otherwise.
func doctorMain(ctx context.Context, cfg *config.Config, cfgErr error, log *slog.Logger, asJSON bool, stdout, stderr io.Writer) int {
	o := doctorOptions
	// The agent code the checks run logs what it decides (the SPIFFE
	// source, say); the rows say it, so its lines show only at debug.
	if log != nil && cfg != nil && cfg.LogLevel == "debug" {
		o.Logger = log
	}
	rows := doctor.Run(ctx, cfg, cfgErr, o)
	write := doctor.WriteTable
	if asJSON {
		write = doctor.WriteJSON
	}
	if err := write(stdout, rows); err != nil {
		fmt.Fprintln(stderr, "sbps-marshal doctor:", err)
		return 1
	}
	if doctor.Failed(rows) {
		return 1
	}
	return 0
}
