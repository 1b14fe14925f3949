package sim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// kwOrder is the params key under which a **parameter method gets its
// keywords in command-line order, joined by NUL.
const kwOrder = "\x00order"

// defaultTPGAttributes are what the kernel gives a new iSCSI TPG.
func defaultTPGAttributes() map[string]json.RawMessage {
	attrs := map[string]int{
		"authentication": 0, "cache_dynamic_acls": 0, "default_cmdsn_depth": 64, "default_erl": 0,
		"demo_mode_discovery": 1, "demo_mode_write_protect": 1, "fabric_prot_type": 0,
		"generate_node_acls": 0, "login_keys_workaround": 1, "login_timeout": 15, "netif_timeout": 2,
		"prod_mode_write_protect": 0, "t10_pi": 0, "tpg_enabled_sendtargets": 1,
	}
	m := make(map[string]json.RawMessage, len(attrs))
	for k, v := range attrs {
		m[k] = json.RawMessage(strconv.Itoa(v))
	}
	return m
}

// cmdTargetCreate is UIFabricModule.ui_command_create for iscsi: the target,
// its tpg1 (enabled) and, with auto_add_default_portal, the portal
// 0.0.0.0:3260.
func (sh *shell) cmdTargetCreate(node []string, p params) error {
	fabric := node[0]
	if fabric != "iscsi" {
		return execErr("targetcli simulator: only iscsi targets are simulated, not %s", fabric)
	}
	wwn := strings.ToLower(p["wwn"])
	if wwn == "" {
		wwn = "iqn.2003-01.org.linux-iscsi.sim:sn." + strings.ReplaceAll(uuid4(), "-", "")[:12]
	}
	if !strings.HasPrefix(wwn, "iqn.") && !strings.HasPrefix(wwn, "eui.") && !strings.HasPrefix(wwn, "naa.") {
		return execErr("Invalid WWN: %s", wwn)
	}
	err := sh.store.mutate(func(st *state) (bool, error) {
		for _, t := range st.Targets {
			if t.Fabric == fabric && t.WWN == wwn {
				return false, execErr("This Target already exists in configFS")
			}
		}
		st.Targets = slices.Insert(st.Targets, 0, target{
			Fabric: fabric, WWN: wwn,
			Extra: map[string]json.RawMessage{"parameters": json.RawMessage(`{"cmd_completion_affinity":"-1"}`)},
			TPGs: []tpg{{
				Tag: 1, Enable: true, Attributes: defaultTPGAttributes(), Parameters: defaultTPGParameters(),
				LUNs: []lun{}, Portals: []json.RawMessage{portal("0.0.0.0", 3260)}, NodeACLs: nil,
			}},
		})
		return true, nil
	})
	if err != nil {
		return err
	}
	sh.view.targets = append(sh.view.targets, &vTarget{fabric: fabric, wwn: wwn,
		tpgs: []*vTPG{{tag: 1, acls: map[string][]int{}, portals: []string{"0.0.0.0:3260"}}}})
	sh.info("Created target %s.", wwn)
	sh.info("Created TPG 1.")
	sh.info("Global pref auto_add_default_portal=true")
	sh.info("Created default portal listening on all IPs (0.0.0.0), port 3260.")
	return nil
}

// cmdTPGSet is ConfigNode.ui_command_set for a TPG's attribute group: each
// keyword in turn is checked (known, a number), written, and reported.
func (sh *shell) cmdTPGSet(node []string, p params) error {
	group := p["group"]
	if group == "global" {
		return sh.cmdSetGlobal(node, p)
	}
	if group != "attribute" {
		return execErr("targetcli simulator: set %s is not simulated; only set attribute", group)
	}
	tag, _ := strconv.Atoi(strings.TrimPrefix(node[2], "tpg"))
	for _, k := range strings.Split(p[kwOrder], "\x00") {
		if k == "" {
			continue
		}
		v := p[k]
		if _, known := defaultTPGAttributes()[k]; !known {
			return execErr("Unknown parameter %s in group '%s'.", k, group)
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return execErr("Not setting %s! Syntax error, '%s' is not a NUMBER.", k, v)
		}
		err = sh.store.mutate(func(st *state) (bool, error) {
			g := st.tpg(node[1], tag)
			if g == nil {
				return false, execErr("This TPG does not exist in configFS")
			}
			attrs := make(map[string]json.RawMessage, len(g.Attributes))
			for ak, av := range g.Attributes {
				attrs[ak] = av
			}
			attrs[k] = json.RawMessage(strconv.Itoa(n))
			g.Attributes = attrs
			return true, nil
		})
		if err != nil {
			return err
		}
		sh.info("Parameter %s is now '%d'.", k, n)
	}
	return nil
}

// globalPrefs are the global preferences the simulator models, with the
// kind of value configshell checks for each.
var globalPrefs = map[string]string{"auto_save_on_exit": "bool"}

// cmdSetGlobal is ui_command_set for the global group (on any node): only
// auto_save_on_exit is modelled, for this process (real targetcli also
// keeps it in prefs.bin; the driver sets it in every batch).
func (sh *shell) cmdSetGlobal(_ []string, p params) error {
	if group := p["group"]; group != "global" {
		return execErr("targetcli simulator: set %s is not simulated here; only set global", group)
	}
	for _, k := range strings.Split(p[kwOrder], "\x00") {
		if k == "" {
			continue
		}
		if _, known := globalPrefs[k]; !known {
			return execErr("targetcli simulator: global preference %s is not simulated", k)
		}
		v, err := evalBool(p, k, true)
		if err != nil {
			return err
		}
		sh.noAutoSave = !v
		sh.info("Parameter %s is now '%s'.", k, strconv.FormatBool(v))
	}
	return nil
}

// cmdClearconfig is UIRoot.ui_command_clearconfig: every target, then every
// storage object, goes; the tree is rebuilt.
func (sh *shell) cmdClearconfig(_ []string, p params) error {
	confirm, err := evalBool(p, "confirm", false)
	if err != nil {
		return err
	}
	if !confirm {
		return execErr("As a precaution, confirm=True needs to be set")
	}
	if err := sh.store.mutate(func(st *state) (bool, error) {
		st.Targets, st.StorageObjects = []target{}, []storageObject{}
		return true, nil
	}); err != nil {
		return err
	}
	sh.info("All configuration cleared")
	return sh.cmdRefresh(nil, nil)
}

// loadPrefs is what ConfigShell does with TARGETCLI_HOME at start: create
// the folder, load prefs.bin or warn on stdout that it could not, and write
// it (prefs autosave) so that the next process finds it.
func loadPrefs(stdout interface{ Write([]byte) (int, error) }) {
	home := os.Getenv("TARGETCLI_HOME")
	if home == "" {
		home = "~/.targetcli"
	}
	home = expandUser(home)
	if err := os.MkdirAll(home, 0o755); err != nil {
		return
	}
	prefs := filepath.Join(home, "prefs.bin")
	if fi, err := os.Stat(prefs); err == nil && fi.Mode().IsRegular() {
		return
	}
	fmt.Fprintf(stdout, "Warning: Could not load preferences file %s.\n", prefs)
	_ = os.WriteFile(prefs, []byte("targetcli simulator preferences\n"), 0o600)
}
