package lio

import (
	"context"
	"fmt"
	"strings"
)

// Version runs `targetcli --version` and returns the version it prints
// ("2.1.53" for targetcli-fb's "/usr/bin/targetcli version 2.1.53", on
// stderr). It changes nothing in LIO; `sbps-marshal doctor` shows it. In
// daemon mode too it runs the binary, not a targetclid request.
func (d *Driver) Version(ctx context.Context) (string, error) {
	res, err := d.run(ctx, []string{"--version"}, "", true)
	if err != nil {
		return "", err
	}
	out := strings.TrimSpace(res.stdout)
	if res.exit != 0 {
		return "", &CmdError{Args: []string{"--version"}, ExitCode: res.exit, Output: tail(out), Err: errExit}
	}
	for l := range strings.SplitSeq(out, "\n") {
		if _, v, ok := strings.Cut(l, " version "); ok && strings.TrimSpace(v) != "" {
			return strings.TrimSpace(v), nil
		}
	}
	return "", fmt.Errorf("%s --version printed no version (%q): is TARGETCLI_BIN targetcli?", d.cfg.Binary, tail(out))
}
