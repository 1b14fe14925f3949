package doctor

import (
	"context"
	"fmt"
	"strings"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/systemctl"
)

// AgentUnit is the agent's own systemd unit.
const AgentUnit = "sbps-marshal.service"

// serviceRow says whether the agent runs as its unit, and what to run when
// it does not: held (masked) after an upgrade from the Python agent until
// the operator switches, never enabled after a fresh install, or stopped.
func serviceRow(ctx context.Context, cfg *config.Config, o Options) Result {
	r := Result{Name: RowService}
	bin := cfg.SystemctlBin
	if bin == "" {
		bin = systemctl.DefaultBin
	}
	unit := systemctl.Unit{Bin: bin, Name: AgentUnit, Timeout: o.Timeout}
	enabled, err := unit.IsEnabled(ctx)
	if err != nil {
		r.Status, r.Detail = Warn, "cannot ask systemd about "+AgentUnit+": "+errText(err)
		r.Fix = "install the sbps-marshal package (it ships " + AgentUnit + "), or run doctor on the node itself"
		if strings.Contains(err.Error(), "not been booted with systemd") {
			r.Fix = "run doctor on the node itself: systemd is not running where it ran"
		}
		return r
	}
	state, err := unit.IsActive(ctx)
	if err != nil {
		r.Status, r.Detail, r.Fix = Warn, "cannot ask systemd about "+AgentUnit+": "+errText(err), "check `systemctl status sbps-marshal`"
		return r
	}
	switch {
	case strings.HasPrefix(enabled, "masked"):
		r.Status = Warn
		r.Detail = fmt.Sprintf("%s is held (masked), as the package leaves it after an upgrade from the Python agent: the new agent does not run until you switch (now %s)", AgentUnit, state)
		r.Fix = "when every other row is OK and `sbps-marshal plan` shows what you expect: systemctl unmask sbps-marshal && systemctl restart sbps-marshal"
	case state == systemctl.Active:
		r.Status, r.Detail = OK, fmt.Sprintf("%s is active (%s)", AgentUnit, enabled)
	case enabled == "disabled":
		r.Status = Warn
		r.Detail = fmt.Sprintf("%s is not enabled and %s, as after a fresh install: nothing projects images on this node", AgentUnit, state)
		r.Fix = "when every other row is OK and `sbps-marshal plan` shows what you expect: systemctl enable --now sbps-marshal"
	default:
		r.Status = Warn
		r.Detail = fmt.Sprintf("%s is %s but %s: nothing projects images on this node", AgentUnit, enabled, state)
		r.Fix = "systemctl restart sbps-marshal; if it stops again: journalctl -u sbps-marshal -p err"
	}
	return r
}
