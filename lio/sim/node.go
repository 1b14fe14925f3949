package sim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/sbps-marshal/sbps-marshal/lio"
)

// EnvDir is the environment variable that points the simulator binary at a
// node directory. Without it the binary refuses to run.
const EnvDir = "TARGETCLI_SIM_DIR"

// NodeOptions describe a simulated node. The zero value is a CSM worker
// named "ncn-w001".
type NodeOptions struct {
	// Hostname names the node; the target is iqn.2023-06.csm.iscsi:<Hostname>.
	// Defaults to "ncn-w001".
	Hostname string
	// PortalIP is the TPG's portal address (the node's NMN IP), port 3260.
	// Defaults to "10.252.1.7".
	PortalIP string
	// SaveFile is the default saveconfig.json path (targetcli's
	// /etc/target/saveconfig.json). Backups go to backup/ beside it.
	// Defaults to <dir>/saveconfig.json.
	SaveFile string
	// Seed, when set, is the initial live state instead of the CSM target.
	Seed *lio.Config
	// NoInitialSave leaves saveconfig.json absent; by default it is written
	// once from the initial live state, as target.service would find it.
	NoInitialSave bool
}

// nodeConfig is the static part of a node, stored in node.json.
type nodeConfig struct {
	IQN      string `json:"iqn"`
	SaveFile string `json:"save_file"`
}

// SaveMode is how saveconfig.json is written.
type SaveMode string

const (
	// SaveInPlace is rtslib 2.1.75 (Debian 12): write <file>.temp, then copy
	// it over the real file in place (truncate, write), so a reader can see
	// an empty or half-written file. The default.
	SaveInPlace SaveMode = "inplace"
	// SaveRename is rtslib ≥ 2.2: write <file>.temp and rename it into place.
	SaveRename SaveMode = "rename"
)

// Faults are injected failures and costs. They live in the node directory,
// so every simulator process and daemon of the node obeys them.
//
// Command numbers count the commands run on the node by any process since
// the Faults were set, starting at 1. Navigation (cd, pwd, ls, exit, help,
// refresh, status) and empty lines are not counted; everything else is,
// failed or not, including saveconfig.
type Faults struct {
	// FailAt makes command number FailAt fail with FailMessage (default
	// "simulated failure") without changing anything.
	FailAt      int    `json:"fail_at,omitempty"`
	FailMessage string `json:"fail_message,omitempty"`
	// DieAfter makes the process that runs command number DieAfter die
	// right after it (SIGKILL; a daemon served in-process stops instead).
	// The command's change stays in the live state; nothing is saved.
	DieAfter int `json:"die_after,omitempty"`
	// HangAt makes command number HangAt block until the process is
	// killed (or, in-process, until the context ends), holding its locks.
	HangAt int `json:"hang_at,omitempty"`
	// StartDelay is added to every process start.
	StartDelay time.Duration `json:"start_delay,omitempty"`
	// PerObjectDelay models reading the configfs tree: at start (and on
	// refresh) a process waits PerObjectDelay × (storage objects + LUNs).
	PerObjectDelay time.Duration `json:"per_object_delay,omitempty"`
	// SaveMode selects how saveconfig.json is written; "" means SaveInPlace.
	SaveMode SaveMode `json:"save_mode,omitempty"`
	// SavePause pauses in the middle of writing saveconfig.json (in place:
	// with half the new content in the file).
	SavePause time.Duration `json:"save_pause,omitempty"`

	// Base is the node's command count when the Faults were set; SetFaults
	// fills it in.
	Base int `json:"base"`
}

func readFaults(dir string) (Faults, error) {
	var f Faults
	data, err := os.ReadFile(filepath.Join(dir, faultsFile))
	if errors.Is(err, fs.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("read simulator faults: %w", err)
	}
	if err := json.Unmarshal(data, &f); err != nil {
		return f, fmt.Errorf("simulator faults in %s are corrupt: %w", dir, err)
	}
	return f, nil
}

// Node is a simulated CSM worker's LIO: a directory holding the live kernel
// state, the saved configuration, faults, counters and locks. Methods are
// safe for concurrent use; they take the same file locks as the simulator
// processes.
type Node struct {
	dir string
	cfg nodeConfig
}

// NewNode creates (or resets) a simulated node in dir, which must exist or
// be creatable. The live state holds the CSM target
// iqn.2023-06.csm.iscsi:<Hostname> with tpg1 enabled, demo mode with write
// protection, no authentication and a portal on PortalIP:3260, unless Seed
// gives another state.
func NewNode(dir string, opts NodeOptions) (*Node, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create simulated node directory: %w", err)
	}
	if opts.Hostname == "" {
		opts.Hostname = "ncn-w001"
	}
	if opts.PortalIP == "" {
		opts.PortalIP = "10.252.1.7"
	}
	if opts.SaveFile == "" {
		opts.SaveFile = filepath.Join(dir, "saveconfig.json")
	}
	if opts.SaveFile, err = filepath.Abs(opts.SaveFile); err != nil {
		return nil, err
	}
	n := &Node{dir: dir, cfg: nodeConfig{IQN: "iqn.2023-06.csm.iscsi:" + opts.Hostname, SaveFile: opts.SaveFile}}

	var st *state
	if opts.Seed != nil {
		st = stateFromConfig(opts.Seed)
	} else {
		st = &state{StorageObjects: []storageObject{}, Targets: []target{{
			Fabric: "iscsi",
			WWN:    n.cfg.IQN,
			Extra:  map[string]json.RawMessage{"parameters": json.RawMessage(`{"cmd_completion_affinity":"-1"}`)},
			TPGs: []tpg{{
				Tag: 1, Enable: true,
				Attributes: csmTPGAttributes(), Parameters: defaultTPGParameters(),
				LUNs: []lun{}, Portals: []json.RawMessage{portal(opts.PortalIP, 3260)}, NodeACLs: []lio.NodeACL{},
			}},
		}}}
	}
	cfgData, _ := json.MarshalIndent(n.cfg, "", "  ")
	if err := writeFileAtomic(filepath.Join(dir, nodeFile), cfgData, 0o644); err != nil {
		return nil, fmt.Errorf("write simulated node settings: %w", err)
	}
	// Env's TARGETCLI_HOME is a home where targetcli ran before: it has
	// prefs.bin, so its processes print no "Could not load preferences"
	// warning (a fresh home gets it, as with real targetcli).
	if err := os.MkdirAll(filepath.Join(dir, "home"), 0o755); err != nil {
		return nil, fmt.Errorf("create the simulated node's TARGETCLI_HOME: %w", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "home", "prefs.bin"), []byte("targetcli simulator preferences\n"), 0o600); err != nil {
		return nil, fmt.Errorf("create the simulated node's TARGETCLI_HOME: %w", err)
	}
	s := &store{dir: dir}
	if err := s.locked(func() error {
		for _, f := range []string{faultsFile, countersFile} {
			if err := os.Remove(filepath.Join(dir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return err
			}
		}
		return s.saveLocked(st)
	}); err != nil {
		return nil, err
	}
	if !opts.NoInitialSave {
		if err := os.MkdirAll(filepath.Dir(opts.SaveFile), 0o755); err != nil {
			return nil, err
		}
		data, err := lio.Marshal(st.config())
		if err != nil {
			return nil, err
		}
		if err := writeFileAtomic(opts.SaveFile, data, 0o600); err != nil {
			return nil, fmt.Errorf("write initial saveconfig.json: %w", err)
		}
	}
	return n, nil
}

// Open returns the node in dir, made earlier by NewNode.
func Open(dir string) (*Node, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	data, err := os.ReadFile(filepath.Join(dir, nodeFile))
	if err != nil {
		return nil, fmt.Errorf("%s is not a simulated node (create it with sim.NewNode): %w", dir, err)
	}
	n := &Node{dir: dir}
	if err := json.Unmarshal(data, &n.cfg); err != nil {
		return nil, fmt.Errorf("simulated node settings %s are corrupt: %w", filepath.Join(dir, nodeFile), err)
	}
	return n, nil
}

// Dir returns the node directory.
func (n *Node) Dir() string { return n.dir }

// IQN returns the CSM target name, iqn.2023-06.csm.iscsi:<hostname>.
func (n *Node) IQN() string { return n.cfg.IQN }

// SaveFile returns the default saveconfig.json path.
func (n *Node) SaveFile() string { return n.cfg.SaveFile }

// SocketPath returns where a daemon started without a socket argument
// listens: <dir>/targetclid.sock.
func (n *Node) SocketPath() string { return filepath.Join(n.dir, socketFile) }

// Env returns the environment entries a simulator process needs:
// TARGETCLI_SIM_DIR, and a private TARGETCLI_HOME inside the node.
func (n *Node) Env() []string {
	return []string{EnvDir + "=" + n.dir, "TARGETCLI_HOME=" + filepath.Join(n.dir, "home")}
}

// Live returns the live (kernel) state in saveconfig.json form, as
// `targetcli saveconfig` would write it now.
func (n *Node) Live() (*lio.Config, error) {
	st, err := (&store{dir: n.dir}).read()
	if err != nil {
		return nil, err
	}
	return st.config(), nil
}

// SetFaults replaces the node's faults; command numbers in f count from now.
func (n *Node) SetFaults(f Faults) error {
	s := &store{dir: n.dir}
	return s.locked(func() error {
		c, err := s.countersLocked()
		if err != nil {
			return err
		}
		f.Base = c.Commands
		data, _ := json.MarshalIndent(f, "", "  ")
		return writeFileAtomic(filepath.Join(n.dir, faultsFile), data, 0o644)
	})
}

// Processes returns how many simulator processes (targetcli and targetclid)
// have started on this node, or -1 when the counter cannot be read.
func (n *Node) Processes() int {
	c, err := n.counters()
	if err != nil {
		return -1
	}
	return c.Processes
}

// Commands returns how many counted commands have run on this node (see
// Faults), or -1 when the counter cannot be read.
func (n *Node) Commands() int {
	c, err := n.counters()
	if err != nil {
		return -1
	}
	return c.Commands
}

func (n *Node) counters() (counters, error) {
	s := &store{dir: n.dir}
	var c counters
	err := s.locked(func() error {
		var err error
		c, err = s.countersLocked()
		return err
	})
	return c, err
}
