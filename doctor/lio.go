package doctor

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/sbps-marshal/sbps-marshal/agent"
	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/systemctl"
)

// checkLIO yields the targetcli, target.service, saveconfig.json, LIO
// restored and LIO target rows.
func checkLIO(ctx context.Context, cfg *config.Config, o Options) []Result {
	driver, tcli := targetcliRow(ctx, cfg, o)
	saving := make(chan struct{}) // closed when no save of driver runs
	if driver != nil {
		defer func() {
			select {
			case <-saving:
				driver.Close()
			default: // an abandoned save holds the driver: Close would wait for it
				go func() { <-saving; driver.Close() }()
			}
		}()
	}
	unit := bounded(ctx, o.Timeout, RowTargetService, "check systemd: systemctl status "+cfg.TargetService,
		func(ctx context.Context) Result { return targetServiceRow(ctx, cfg, o) })
	saved, save := saveconfigRow(cfg)
	var restored Result
	if driver == nil {
		close(saving)
		restored = skipped(RowLIORestored, RowTargetcli, "targetcli is not usable")
	} else {
		// Saving LIO's live state takes what it takes the agent: bounded
		// by TARGETCLI_TIMEOUT, as the agent's own saves are.
		restored = bounded(ctx, cfg.TargetcliTimeout, RowLIORestored, "targetcli saveconfig took longer than TARGETCLI_TIMEOUT ("+cfg.TargetcliTimeout.String()+"), as the agent's saves would: check for a stuck targetcli process holding /var/run/targetcli.lock",
			func(ctx context.Context) Result {
				defer close(saving)
				return restoredRow(ctx, cfg, driver)
			})
	}
	target := skipped(RowLIOTarget, RowSaveconfig, "saveconfig.json is not readable")
	if saved != nil {
		target = targetRow(cfg, saved)
	}
	return []Result{tcli, unit, save, restored, target}
}

// targetcliRow checks TARGETCLI_BIN, its version through the agent's
// driver, and the targetclid socket in daemon mode. It returns the driver
// when targetcli is usable.
func targetcliRow(ctx context.Context, cfg *config.Config, o Options) (*lio.Driver, Result) {
	r := Result{Name: RowTargetcli}
	fail := func(detail, fix string) (*lio.Driver, Result) {
		r.Status, r.Detail, r.Fix = Fail, detail, fix
		return nil, r
	}
	install := "install targetcli (zypper install targetcli-fb), or " + setKey(cfg, "TARGETCLI_BIN", "<path of targetcli>")
	fi, err := os.Stat(cfg.TargetcliBin)
	switch {
	case err != nil:
		return fail(fmt.Sprintf("TARGETCLI_BIN %s: %s", cfg.TargetcliBin, reason(err)), install)
	case !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0:
		return fail(fmt.Sprintf("TARGETCLI_BIN %s is not an executable file", cfg.TargetcliBin), install)
	}
	dc, err := agent.DriverConfig(cfg, o.TargetcliEnv)
	if err != nil {
		return fail(errText(err), setKey(cfg, "TARGETCLI_MODE", "batch"))
	}
	mode := dc.Mode
	driver, err := lio.New(dc, o.Logger)
	if err != nil {
		return fail(errText(err), "check SBPS_MARSHAL_LIO_SAVE_FILE and SBPS_MARSHAL_TARGETCLI_* in "+envFile(cfg))
	}
	res, version := boundedWith(ctx, o.Timeout, RowTargetcli, "targetcli --version hangs: check for a stuck targetcli process holding /var/run/targetcli.lock",
		func(ctx context.Context) (Result, string) {
			v, err := driver.Version(ctx)
			if err != nil {
				return Result{Name: RowTargetcli, Status: Fail, Detail: errText(err), Fix: install}, ""
			}
			return Result{Name: RowTargetcli, Status: OK}, v
		})
	if res.Status != OK {
		driver.Close()
		return nil, res
	}
	r.Status = OK
	r.Detail = fmt.Sprintf("%s version %s; TARGETCLI_MODE=%s", cfg.TargetcliBin, version, mode)
	r.Detail += " (" + mode.Describe() + ")"
	if mode == lio.Daemon {
		if detail, fix := targetclidAnswers(ctx, cfg, o.Timeout); detail != "" {
			driver.Close()
			return fail(detail, fix)
		}
		r.Detail += "; targetclid answers at " + cfg.TargetclidSocket
	}
	return driver, r
}

// targetclidAnswers checks that TARGETCLID_SOCKET is a socket that accepts
// a connection; otherwise it says what is wrong and the fix.
func targetclidAnswers(ctx context.Context, cfg *config.Config, timeout time.Duration) (detail, fix string) {
	fi, err := os.Stat(cfg.TargetclidSocket)
	switch {
	case err != nil:
		return fmt.Sprintf("TARGETCLI_MODE=daemon but the targetclid socket %s: %s", cfg.TargetclidSocket, reason(err)),
			"systemctl enable --now targetclid.socket, or " + setKey(cfg, "TARGETCLI_MODE", "batch") + " (the default)"
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Sprintf("TARGETCLID_SOCKET %s is not a socket", cfg.TargetclidSocket),
			setKey(cfg, "TARGETCLID_SOCKET", "<targetclid's socket, /var/run/targetclid.sock>")
	}
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := (&net.Dialer{}).DialContext(dctx, "unix", cfg.TargetclidSocket)
	if err != nil {
		return fmt.Sprintf("TARGETCLI_MODE=daemon but targetclid does not answer at %s: %s", cfg.TargetclidSocket, errText(err)),
			"systemctl restart targetclid.socket targetclid.service, or " + setKey(cfg, "TARGETCLI_MODE", "batch") + " (the default)"
	}
	c.Close()
	return "", ""
}

// targetServiceRow asks `systemctl is-active TARGET_SERVICE` through the
// agent's systemctl package.
func targetServiceRow(ctx context.Context, cfg *config.Config, o Options) Result {
	r := Result{Name: RowTargetService}
	bin, note := cfg.SystemctlBin, ""
	if bin == "" {
		bin, note = systemctl.DefaultBin, " (SYSTEMCTL_BIN is empty: the agent never starts it itself)"
	}
	unit := systemctl.Unit{Bin: bin, Name: cfg.TargetService, Timeout: o.Timeout}
	state, err := unit.IsActive(ctx)
	switch {
	case err != nil && strings.Contains(err.Error(), "not been booted with systemd"):
		r.Status, r.Detail = Fail, "cannot ask systemd about "+cfg.TargetService+": "+errText(err)
		r.Fix = "run doctor on the node itself: systemd is not running where it ran"
	case err != nil:
		r.Status, r.Detail = Fail, "cannot ask systemd about "+cfg.TargetService+": "+errText(err)
		r.Fix = setKey(cfg, "SYSTEMCTL_BIN", "<path of systemctl, /usr/bin/systemctl>")
	case state == systemctl.Active:
		r.Status, r.Detail = OK, cfg.TargetService+" is active: LIO was restored from saveconfig.json"+note
	default:
		r.Status = Fail
		r.Detail = fmt.Sprintf("%s is %s: nothing restores %s into the kernel (at boot, or after `systemctl stop`, which clears LIO)%s", cfg.TargetService, state, cfg.LIOSaveFile, note)
		r.Fix = fmt.Sprintf("systemctl enable --now %s (see `systemctl status %s` and `journalctl -u %s` if it fails)", cfg.TargetService, cfg.TargetService, cfg.TargetService)
	}
	return r
}

// saveconfigRow reads and parses LIO_SAVE_FILE as the agent does (a
// half-written file is read again for a second).
func saveconfigRow(cfg *config.Config) (*lio.Config, Result) {
	r := Result{Name: RowSaveconfig}
	deadline := time.Now().Add(time.Second)
	var c *lio.Config
	var err error
	for {
		c, err = lio.Load(cfg.LIOSaveFile)
		if !errors.Is(err, lio.ErrIncomplete) || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	switch {
	case err == nil:
		r.Status = OK
		r.Detail = fmt.Sprintf("%s: %d storage objects, %d targets", cfg.LIOSaveFile, len(c.StorageObjects), len(c.Targets))
		return c, r
	case errors.Is(err, fs.ErrNotExist):
		r.Status = Warn
		r.Detail = cfg.LIOSaveFile + " does not exist: target.service restores nothing at boot"
		r.Fix = "`sbps-marshal sync` (or the running agent at its next pass) writes it from LIO's live state when LIO holds " + cfg.TargetIQN + "; or `targetcli saveconfig " + cfg.LIOSaveFile + "`"
	case errors.Is(err, fs.ErrPermission):
		r.Status, r.Detail = Fail, cfg.LIOSaveFile+": "+reason(err)
		r.Fix = "run doctor as root, as the service runs"
	default:
		r.Status = Fail
		r.Detail = fmt.Sprintf("not valid (read again for a second): %s; target.service cannot restore it at boot", errText(err))
		r.Fix = fmt.Sprintf("when LIO's live state holds %s the agent writes the file again at its next pass (`sbps-marshal sync`), keeping this one as %s.unreadable; otherwise restore a good copy (/etc/target/backup/) with `targetctl restore <file>`, then `targetcli saveconfig %s`",
			cfg.TargetIQN, cfg.LIOSaveFile, cfg.LIOSaveFile)
	}
	return nil, r
}

// restoredRow asks the agent's save guard whether LIO's live state holds
// everything saveconfig.json holds (lio.Guard.Check, as `sbps-marshal
// status`).
func restoredRow(ctx context.Context, cfg *config.Config, driver *lio.Driver) Result {
	r := Result{Name: RowLIORestored}
	guard, err := lio.NewGuard(driver, cfg.LIOSaveFile, cfg.TargetIQN)
	if err == nil {
		err = guard.Check(ctx)
	}
	switch {
	case err == nil:
		r.Status, r.Detail = OK, "LIO's live state holds everything "+cfg.LIOSaveFile+" holds"
	case errors.Is(err, lio.ErrNotRestored):
		r.Status, r.Detail = Fail, errText(err)
		r.Fix = fmt.Sprintf("systemctl start %s (it restores %s into the kernel; on a labelled node the agent does so itself when SYSTEMCTL_BIN is set); if it is active already: systemctl restart %s",
			cfg.TargetService, cfg.LIOSaveFile, cfg.TargetService)
	default:
		r.Status, r.Detail = Fail, "cannot read LIO's live state: "+errText(err)
		r.Fix = "check targetcli (the targetcli row) and that " + lio.StagingFile(cfg.LIOSaveFile) + "'s folder is writable by root"
	}
	return r
}

// targetRow checks what the agent projects into, in saveconfig.json: the
// node's target, its tpg1, write protection as the planner judges it, and
// portals.
func targetRow(cfg *config.Config, c *lio.Config) Result {
	r := Result{Name: RowLIOTarget}
	t, ok := c.Target(cfg.TargetIQN)
	if !ok {
		var have []string
		for _, t := range c.Targets {
			have = append(have, t.WWN)
		}
		r.Status = Fail
		r.Detail = fmt.Sprintf("%s has no target %s (targets: %s): the agent cannot project", cfg.LIOSaveFile, cfg.TargetIQN, orNone(have))
		r.Fix = provision + "; or, if the node's target has another name, " + setKey(cfg, "TARGET_IQN", "<its IQN>")
		return r
	}
	tpg, ok := t.TPG(1)
	if !ok {
		r.Status, r.Detail = Fail, cfg.TargetIQN+" has no tpg1"
		r.Fix = provision
		return r
	}
	portals := portalsOf(tpg)
	enabled := "enabled"
	if !tpg.Enable {
		enabled = "disabled"
	}
	r.Status = OK
	r.Detail = fmt.Sprintf("%s/tpg1 %s, %d LUNs, portals %s, %s", cfg.TargetIQN, enabled, len(tpg.LUNs), orNone(portals), strings.Join(protectionAttrs(tpg), " "))
	var f findings
	f.tpg(cfg, tpg, len(portals) > 0)
	if len(f.problems) > 0 {
		r.Status = f.status
		r.Detail = strings.Join(f.problems, "; ") + "; " + r.Detail
		r.Fix = strings.Join(f.fixes, "; ")
		if f.targetcliFix {
			r.Fix += "; then `targetcli saveconfig " + cfg.LIOSaveFile + "`"
		}
	}
	return r
}

// provision is how a CSM node gets its target.
const provision = "CSM provisions it (csm-config-management, config_sbps_iscsi_targets.yml): run that playbook for this node"

// protectionAttrs are the TPG's write-protection attributes, as name=value.
func protectionAttrs(tpg *lio.TPG) []string {
	var attrs []string
	for _, a := range []string{"generate_node_acls", "demo_mode_write_protect", "prod_mode_write_protect"} {
		if v, ok := tpg.Attr(a); ok {
			attrs = append(attrs, a+"="+strconv.FormatInt(v, 10))
		}
	}
	return attrs
}

// portalsOf lists the TPG's portals as ip:port.
func portalsOf(tpg *lio.TPG) []string {
	var portals []string
	for _, raw := range tpg.Portals {
		var p struct {
			IP   string `json:"ip_address"`
			Port int    `json:"port"`
		}
		if json.Unmarshal(raw, &p) == nil {
			portals = append(portals, fmt.Sprintf("%s:%d", p.IP, p.Port))
		}
	}
	return portals
}

// findings collects what is wrong with the node's TPG, the worst status,
// and the fixes.
type findings struct {
	status       Status
	problems     []string
	fixes        []string
	targetcliFix bool // a fix changes LIO: saving it follows
}

func (f *findings) add(s Status, problem, fix string, targetcli bool) {
	if s == Fail || f.status == "" || f.status == OK {
		f.status = s
	}
	f.problems, f.fixes = append(f.problems, problem), append(f.fixes, fix)
	f.targetcliFix = f.targetcliFix || targetcli
}

// tpg checks write protection, portals and whether tpg1 is enabled.
func (f *findings) tpg(cfg *config.Config, tpg *lio.TPG, hasPortals bool) {
	tpgPath := "/iscsi/" + cfg.TargetIQN + "/tpg1"
	if why := projector.Writable(tpg); why != "" {
		fix := "targetcli " + tpgPath + " set attribute demo_mode_write_protect=1 prod_mode_write_protect=1 generate_node_acls=1 (and map every ACL's LUNs read-only)"
		if cfg.AllowWritableTPG {
			f.add(Warn, "initiators may write: "+why+" (ALLOW_WRITABLE_TPG=true: projected anyway)", fix, true)
		} else {
			f.add(Fail, "initiators could write: "+why+"; the agent refuses to project into it", fix, true)
		}
	} else if v, ok := tpg.Attr("prod_mode_write_protect"); ok && v != 1 {
		f.add(Warn, "prod_mode_write_protect is not 1 (CSM provisions 1): LUNs mapped through explicit ACLs later would be writable",
			"targetcli "+tpgPath+" set attribute prod_mode_write_protect=1", true)
	}
	if !hasPortals {
		f.add(Fail, "tpg1 has no portal: no initiator can log in",
			"targetcli "+tpgPath+"/portals create <this node's NMN or HSN address> ("+provision+")", true)
	}
	if !tpg.Enable {
		f.add(Warn, "tpg1 is disabled: the agent disables it on an unlabelled node and enables it on a labelled one at its next pass",
			"label the node (node gate row), then `sbps-marshal resync`", false)
	}
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
