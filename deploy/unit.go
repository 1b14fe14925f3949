package deploy

import (
	_ "embed"
	"strings"
)

//go:embed sbps-marshal.service
var unit string

// UnitEnvironment returns the Environment= assignments of the shipped unit,
// as KEY=value: all a system service gets besides its EnvironmentFile (no
// HOME, no KUBECONFIG). Tests that run the agent as systemd would use it.
func UnitEnvironment() []string {
	var env []string
	for line := range strings.Lines(unit) {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "Environment=")
		if !ok {
			continue
		}
		for _, kv := range strings.Fields(v) {
			env = append(env, strings.Trim(kv, `"`))
		}
	}
	return env
}
