package bench

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/lio/sim"
)

// MemLIO is an in-memory LIO for the in-process benchmarks: it applies ops
// to a saveconfig model and writes saveconfig.json the way targetcli's
// saveconfig would, with each fileio backstore shaped like the one the
// targetcli simulator writes (attributes, ALUA groups). It stands in for
// targetcli so a benchmark can measure the agent alone: Busy is the time
// spent in Apply and Save (the "simulator's own time").
type MemLIO struct {
	SaveFile string
	mu       sync.Mutex
	cfg      *lio.Config
	template lio.StorageObject
	// Calls counts Apply calls (each would be one targetcli batch process).
	Calls int
	// Busy is the time spent inside Apply/Save; BusyCPU the CPU time of
	// the thread that ran them.
	Busy, BusyCPU time.Duration
	// Lstat sizes image files; defaults to os.Lstat.
	Lstat func(string) (fs.FileInfo, error)
}

var _ lio.Applier = (*MemLIO)(nil)

// NewMemLIO makes a simulated node in dir (for its initial CSM target and
// the shape of a fileio backstore) and returns an in-memory LIO that
// writes dir/saveconfig.json.
func NewMemLIO(dir string) (*MemLIO, string, error) {
	node, err := sim.NewNode(filepath.Join(dir, "tmpl"), sim.NodeOptions{})
	if err != nil {
		return nil, "", err
	}
	img := filepath.Join(dir, "template.img")
	if err := os.WriteFile(img, make([]byte, 4096), 0o644); err != nil {
		return nil, "", err
	}
	for _, c := range []string{"/backstores/fileio create tmpl " + img + " write_back=false", "saveconfig"} {
		if out, err := node.Run(context.Background(), c); err != nil {
			return nil, "", fmt.Errorf("%s: %v: %s", c, err, out)
		}
	}
	withOne, err := lio.Load(node.SaveFile())
	if err != nil {
		return nil, "", err
	}
	tmpl, ok := withOne.FileIO("tmpl")
	if !ok {
		return nil, "", fmt.Errorf("simulator did not save the template backstore")
	}
	empty := *withOne
	empty.StorageObjects = nil
	m := &MemLIO{SaveFile: filepath.Join(dir, "saveconfig.json"), cfg: &empty, template: *tmpl}
	return m, node.IQN(), m.Save(context.Background())
}

// Load replaces the model with the saveconfig.json at path (to take over
// from a real or simulated LIO).
func (m *MemLIO) Load(path string) error {
	c, err := lio.Load(path)
	if err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cfg = c
	return nil
}

// Apply applies ops and writes saveconfig.json.
func (m *MemLIO) Apply(ctx context.Context, ops []lio.Op) (res []lio.Result, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	start := time.Now()
	m.BusyCPU += threadCPU(func() { res, err = m.applyLocked(ops) })
	m.Busy += time.Since(start)
	return res, err
}

func (m *MemLIO) applyLocked(ops []lio.Op) ([]lio.Result, error) {
	m.Calls++
	res := make([]lio.Result, len(ops))
	for i, op := range ops {
		res[i] = lio.Result{Op: op, Outcome: lio.Applied}
		switch op.Kind {
		case lio.CreateBackstore:
			stat := m.Lstat
			if stat == nil {
				stat = os.Lstat
			}
			fi, err := stat(op.File)
			size := int64(0)
			if err == nil {
				size = fi.Size()
			}
			so := m.template
			so.Name, so.Dev, so.WWN, so.Size = op.Backstore, op.File, op.WWN, &size
			m.cfg.StorageObjects = append(m.cfg.StorageObjects, so)
		case lio.CreateLUN:
			tpg := m.tpg(op)
			idx := op.LUN
			if idx == lio.AutoLUN {
				// LUNs are only added here: the next index is past the highest.
				idx = 0
				for _, l := range tpg.LUNs {
					idx = max(idx, l.Index+1)
				}
			}
			tpg.LUNs = append(tpg.LUNs, lio.LUN{Index: idx, StorageObject: "/backstores/fileio/" + op.Backstore, ALUAGroup: "default_tg_pt_gp"})
		case lio.DeleteBackstore:
			for j, so := range m.cfg.StorageObjects {
				if so.Name == op.Backstore {
					m.cfg.StorageObjects = append(m.cfg.StorageObjects[:j], m.cfg.StorageObjects[j+1:]...)
					break
				}
			}
		default:
			res[i] = lio.Result{Op: op, Outcome: lio.Failed, Err: fmt.Errorf("MemLIO: %s not modelled", op.Kind)}
		}
	}
	return res, m.saveLocked()
}

func (m *MemLIO) tpg(op lio.Op) *lio.TPG {
	t, _ := m.cfg.Target(op.Target)
	g, _ := t.TPG(op.TPGTag())
	return g
}

// Save writes saveconfig.json.
func (m *MemLIO) Save(context.Context) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.saveLocked()
}

func (m *MemLIO) saveLocked() error {
	data, err := lio.Marshal(m.cfg)
	if err != nil {
		return err
	}
	tmp := m.SaveFile + ".temp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, m.SaveFile)
}
