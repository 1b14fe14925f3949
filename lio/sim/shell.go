package sim

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
)

// CommandError is a failed targetcli command. Msg is exactly what
// targetcli prints for it.
type CommandError struct {
	Msg string
	// Crash marks an error that is not an ExecutionError or RTSLibError
	// (a Python ValueError or OSError). In batch mode it is not caught: the
	// process prints a traceback and exits 1 without saving.
	Crash bool
	// PyType is the Python exception class of a crash ("ValueError").
	PyType string
}

func (e *CommandError) Error() string { return e.Msg }

func execErr(format string, args ...any) error {
	return &CommandError{Msg: fmt.Sprintf(format, args...)}
}

func crashErr(pyType, format string, args ...any) error {
	return &CommandError{Msg: fmt.Sprintf(format, args...), Crash: true, PyType: pyType}
}

// ErrDied is returned when a DieAfter fault fired: the process (or
// in-process daemon) died after the command.
var ErrDied = errors.New("targetcli simulator: simulated crash (Faults.DieAfter)")

// errExit is returned by the exit command.
var errExit = errors.New("exit")

// shell is one targetcli process: its UI tree, current path and output.
type shell struct {
	ctx   context.Context
	cfg   nodeConfig
	store *store
	view  *view
	cwd   []string
	out   io.Writer // info messages
	errw  io.Writer // batch mode's logged errors
	// noAutoSave is `set global auto_save_on_exit=false` in this process:
	// batch mode then does not save at the end of input.
	noAutoSave bool
}

// startShell models a targetcli process start: it counts the process, pays
// the start and per-object delays, and builds the UI tree from the live
// state.
func startShell(ctx context.Context, n *Node, out, errw io.Writer) (*shell, error) {
	sh := &shell{ctx: ctx, cfg: n.cfg, store: &store{dir: n.dir}, out: out, errw: errw}
	_, f, err := sh.store.bump(func(c *counters) { c.Processes++ })
	if err != nil {
		return nil, err
	}
	if err := sleep(ctx, f.StartDelay); err != nil {
		return nil, err
	}
	if err := sh.refresh(f); err != nil {
		return nil, err
	}
	return sh, nil
}

func (sh *shell) refresh(f Faults) error {
	st, err := sh.store.read()
	if err != nil {
		return err
	}
	if err := sleep(sh.ctx, time.Duration(st.objects())*f.PerObjectDelay); err != nil {
		return err
	}
	sh.view = buildView(st)
	return nil
}

func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (sh *shell) info(format string, args ...any) {
	fmt.Fprintf(sh.out, format+"\n", args...)
}

// uncounted commands do not take part in fault numbering.
var uncounted = map[string]bool{"": true, "cd": true, "pwd": true, "ls": true, "exit": true, "help": true, "refresh": true, "status": true}

// runLine runs one command line as ConfigShell.run_cmdline does. It returns
// a *CommandError for a failed command, errExit for exit, ErrDied when a
// DieAfter fault fired, or another error for a simulator failure.
func (sh *shell) runLine(line string) error {
	if line == "" {
		return nil
	}
	c := parseLine(line)
	var f Faults
	n := 0
	if !uncounted[c.Command] {
		cnt, faults, err := sh.store.bump(func(c *counters) { c.Commands++ })
		if err != nil {
			return err
		}
		f, n = faults, cnt.Commands-faults.Base
		if f.HangAt == n {
			<-sh.ctx.Done()
			return sh.ctx.Err()
		}
		if f.FailAt == n {
			msg := f.FailMessage
			if msg == "" {
				msg = "simulated failure"
			}
			err := execErr("%s", msg)
			if f.DieAfter == n {
				return ErrDied
			}
			return err
		}
	}
	err := sh.execute(c)
	if n > 0 && f.DieAfter == n {
		return ErrDied
	}
	return err
}

// execute is ConfigShell._execute_command.
func (sh *shell) execute(c cmdline) error {
	path, command, pparams, kparams := c.Path, c.Command, c.PParams, c.KParams
	iterall := strings.HasSuffix(path, "*")
	if iterall {
		path = strings.TrimRight(path, "*")
	}
	if path == "" {
		path = "."
	}
	if command == "" {
		if iterall {
			command = "ls"
		} else {
			command, pparams = "cd", []string{"."}
		}
	}
	target, err := sh.view.resolve(sh.cwd, path)
	if err != nil {
		return execErr("%s", err)
	}
	targets := [][]string{target}
	if iterall {
		targets = nil
		for _, k := range sh.view.children(target) {
			targets = append(targets, append(slices.Clone(target), k))
		}
	}
	for _, t := range targets {
		if iterall {
			sh.info("[%s]", pathString(t))
		}
		if err := sh.call(t, command, pparams, kparams, c.KOrder); err != nil {
			return err
		}
	}
	return nil
}

// sig is a ui_command_* method's parameter list: args, of which the first
// req are required.
type sig struct {
	args []string
	req  int
}

// kwargsMethods also take **parameter (any keyword), handed over in params
// under the keyword's name, by node kind and command.
var kwargsMethods = map[string]bool{"tpg set": true, "set": true}

type handler struct {
	sig sig
	run func(sh *shell, node []string, p params) error
}

// params are the bound arguments; absent ones are missing from the map.
type params map[string]string

func (p params) get(name string) (string, bool) { v, ok := p[name]; return v, ok }

var globalCommands = map[string]handler{
	"cd":      {sig{[]string{"path"}, 0}, (*shell).cmdCd},
	"pwd":     {sig{nil, 0}, func(sh *shell, n []string, _ params) error { sh.info("%s", pathString(n)); return nil }},
	"ls":      {sig{[]string{"path", "depth"}, 0}, (*shell).cmdLs},
	"exit":    {sig{nil, 0}, func(*shell, []string, params) error { return errExit }},
	"refresh": {sig{nil, 0}, (*shell).cmdRefresh},
	"status":  {sig{nil, 0}, (*shell).cmdStatus},
	"help":    {sig{[]string{"topic"}, 0}, (*shell).cmdHelp},
	"set":     {sig{[]string{"group"}, 0}, (*shell).cmdSetGlobal},
}

var nodeCommands = map[string]map[string]handler{
	"root": {
		"saveconfig":  {sig{[]string{"savefile"}, 0}, (*shell).cmdSaveconfig},
		"clearconfig": {sig{[]string{"confirm"}, 0}, (*shell).cmdClearconfig},
	},
	"fabric": {
		"create": {sig{[]string{"wwn"}, 0}, (*shell).cmdTargetCreate},
	},
	"backstore": {
		"create": {sig{[]string{"name", "file_or_dev", "size", "write_back", "sparse", "wwn"}, 2}, (*shell).cmdFileioCreate},
		"delete": {sig{[]string{"name", "save"}, 1}, (*shell).cmdBackstoreDelete},
	},
	"tpg": {
		"enable":  {sig{nil, 0}, (*shell).cmdEnable},
		"disable": {sig{nil, 0}, (*shell).cmdDisable},
		"set":     {sig{[]string{"group"}, 0}, (*shell).cmdTPGSet},
	},
	"luns": {
		"create": {sig{[]string{"storage_object", "lun", "add_mapped_luns"}, 1}, (*shell).cmdLunCreate},
		"delete": {sig{[]string{"lun"}, 1}, (*shell).cmdLunDelete},
	},
}

func (sh *shell) lookup(node []string, command string) (handler, bool) {
	k := kind(node)
	if k == "backstore" && command == "create" && node[1] != "fileio" {
		return handler{}, false // only fileio creation is simulated
	}
	if h, ok := nodeCommands[k][command]; ok {
		return h, true
	}
	h, ok := globalCommands[command]
	return h, ok
}

// call is ConfigNode.execute_command: find the method, check parameters
// as assert_params does, run it.
func (sh *shell) call(node []string, command string, pparams []string, kparams map[string]string, korder []string) error {
	h, ok := sh.lookup(node, command)
	if !ok {
		return execErr("Command not found %s", command)
	}
	kwargs := kwargsMethods[kind(node)+" "+command] || (command == "set" && kwargsMethods["set"])
	if err := assertParams(h.sig, kwargs, pparams, kparams, korder); err != nil {
		return err
	}
	p := params{}
	for i, v := range pparams {
		p[h.sig.args[i]] = v
	}
	for k, v := range kparams {
		p[k] = v
	}
	if kwargs {
		// The keyword order, for methods that act on each in turn.
		p[kwOrder] = strings.Join(slices.DeleteFunc(slices.Clone(korder), func(k string) bool { return slices.Contains(h.sig.args, k) }), "\x00")
	}
	return h.run(sh, node, p)
}

func assertParams(s sig, kwargs bool, pparams []string, kparams map[string]string, korder []string) error {
	opt := s.args[s.req:]
	var unexpected, missing []string
	for k := range kparams {
		if !slices.Contains(s.args, k) && !kwargs {
			unexpected = append(unexpected, k)
		}
	}
	if len(pparams) < len(s.args) {
		for _, a := range s.args[len(pparams):] {
			if _, given := kparams[a]; !given && !slices.Contains(opt, a) {
				missing = append(missing, a)
			}
		}
	}
	sort.Strings(unexpected)
	sort.Strings(missing)
	standard := len(pparams)
	for k := range kparams {
		if slices.Contains(s.args, k) {
			standard++
		}
	}
	quote := func(ss []string) string {
		q := make([]string, len(ss))
		for i, s := range ss {
			q[i] = "'" + s + "'"
		}
		return strings.Join(q, ", ")
	}
	switch {
	case len(missing) == 1:
		return execErr("Missing required parameter %s", missing[0])
	case len(missing) > 1:
		return execErr("Missing required parameters %s", quote(missing))
	case len(unexpected) == 1:
		return execErr("Unexpected keyword parameter '%s'.", unexpected[0])
	case len(unexpected) > 1:
		return execErr("Unexpected keyword parameters %s.", quote(unexpected))
	}
	all := slices.Clone(s.args[:min(len(pparams), len(s.args))])
	all = append(all, korder...)
	for _, a := range all {
		if strings.Count("\x00"+strings.Join(all, "\x00")+"\x00", "\x00"+a+"\x00") > 1 {
			return execErr("Duplicate parameter %s.", a)
		}
	}
	if len(opt) == 0 && standard != s.req {
		return execErr("Got %d positionnal parameters, expected exactly %d.", standard, s.req)
	}
	if standard > len(s.args) {
		return execErr("Got %d positionnal parameters, expected at most %d.", standard, len(s.args))
	}
	return nil
}

// evalBool is ui_eval_param(value, 'bool', def).
func evalBool(p params, name string, def bool) (bool, error) {
	v, ok := p.get(name)
	if !ok {
		return def, nil
	}
	switch strings.ToLower(v) {
	case "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, execErr("Syntax error, '%s' is not true|false.", v)
}

func (sh *shell) cmdCd(node []string, p params) error {
	path, ok := p.get("path")
	if !ok {
		return nil // real targetcli opens an interactive tree walker here
	}
	t, err := sh.view.resolve(node, path)
	if err != nil {
		return execErr("%s", err)
	}
	sh.cwd = t
	return nil
}

func (sh *shell) cmdLs(node []string, p params) error {
	target := node
	if path, ok := p.get("path"); ok {
		t, err := sh.view.resolve(node, path)
		if err != nil {
			return execErr("%s", err)
		}
		target = t
	}
	depth := -1
	if d, ok := p.get("depth"); ok {
		n, err := strconv.Atoi(d)
		if err != nil {
			return execErr("The tree depth must be a number.")
		}
		if n != 0 {
			depth = n
		}
	}
	sh.info("%s", sh.render(target, depth))
	return nil
}

func (sh *shell) cmdRefresh([]string, params) error {
	f, err := readFaults(sh.store.dir)
	if err != nil {
		return err
	}
	return sh.refresh(f)
}

func (sh *shell) cmdStatus(node []string, _ params) error {
	st, err := sh.store.read()
	if err != nil {
		return err
	}
	sh.info("Status for %s: %s", pathString(node), sh.summary(st, node))
	return nil
}

func (sh *shell) cmdHelp([]string, params) error {
	sh.info("GENERALITIES\n============\nThis is the targetcli simulator of sbps-marshal; it implements the subset of\n" +
		"targetcli the agent uses: /backstores/fileio create|delete, <tpg>/luns create|delete,\n" +
		"<tpg> enable|disable, saveconfig, cd, pwd, ls, refresh, status, exit.")
	return nil
}

func (sh *shell) cmdEnable(node []string, _ params) error { return sh.setEnable(node, true) }

func (sh *shell) cmdDisable(node []string, _ params) error { return sh.setEnable(node, false) }

func (sh *shell) setEnable(node []string, on bool) error {
	tag, _ := strconv.Atoi(strings.TrimPrefix(node[2], "tpg"))
	var was bool
	err := sh.store.mutate(func(st *state) (bool, error) {
		g := st.tpg(node[1], tag)
		if g == nil {
			return false, execErr("This TPG does not exist in configFS")
		}
		was = g.Enable
		g.Enable = on
		return was != on, nil
	})
	if err != nil {
		return err
	}
	switch {
	case on && was:
		sh.info("The TPGT is already enabled.")
	case on:
		sh.info("The TPGT has been enabled.")
	case was:
		sh.info("The TPGT has been disabled.")
	default:
		sh.info("The TPGT is already disabled.")
	}
	return nil
}

var sizeRE = regexp.MustCompile(`^[0-9]+[k|m|g|t]?[b]?$`)

// humanToBytes is targetcli's human_to_bytes.
func humanToBytes(h string) (int64, error) {
	s := strings.ToLower(strings.ReplaceAll(h, "i", ""))
	if !sizeRE.MatchString(s) {
		return 0, execErr("Cannot interpret size, wrong format: %s", h)
	}
	s = strings.TrimRight(s, "ib")
	power := strings.IndexByte("kmgt", s[len(s)-1]) + 1
	if power > 0 {
		s = s[:len(s)-1]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, execErr("The file size is too large (%s bytes)", h)
	}
	for range power {
		n *= 1024
	}
	return n, nil
}

func expandUser(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		if home, err := os.UserHomeDir(); err == nil {
			return home + p[1:]
		}
	}
	return p
}

func pyNoFile(path string) error {
	return crashErr("FileNotFoundError", "[Errno 2] No such file or directory: '%s'", path)
}

// cmdFileioCreate is UIFileIOBackstore.ui_command_create followed by
// rtslib's FileIOStorageObject creation.
func (sh *shell) cmdFileioCreate(_ []string, p params) error {
	sparse, err := evalBool(p, "sparse", true)
	if err != nil {
		return err
	}
	writeBack, err := evalBool(p, "write_back", true)
	if err != nil {
		return err
	}
	name, wwn := p["name"], p["wwn"]
	size, sizeGiven := p.get("size")
	file := expandUser(p["file_or_dev"])

	fi, statErr := os.Stat(file)
	if statErr == nil {
		// "can't use is_dev_in_use() on files": compare with every
		// storage object's file. os.path.samefile raises when that file
		// is gone, and nothing catches it.
		st, err := sh.store.read()
		if err != nil {
			return err
		}
		for _, so := range st.StorageObjects {
			if so.Dev == "" {
				continue
			}
			ofi, err := os.Stat(so.Dev)
			if err != nil {
				return pyNoFile(so.Dev)
			}
			if os.SameFile(fi, ofi) {
				return execErr("storage object for %s already exists: %s", file, so.Name)
			}
		}
	}
	var n int64
	switch {
	case statErr == nil && fi.Mode().IsRegular():
		if sizeGiven && size != "" {
			sh.info("%s exists, using its size (%d bytes) instead", file, fi.Size())
		}
		n = fi.Size()
	case statErr == nil:
		return execErr("Path %s exists but is not a file", file)
	default:
		if size == "" {
			return execErr("Attempting to create file for new fileio backstore, need a size")
		}
		if n, err = humanToBytes(size); err != nil {
			return err
		}
		if err := createFile(file, n, sparse); err != nil {
			return err
		}
		if !sparse {
			sh.info("Writing %d bytes", n)
		}
	}

	if strings.ContainsAny(name, "/ \t\n") {
		return execErr("A storage object's name cannot contain  /, newline or spaces/tabs")
	}
	if wwn == "" {
		wwn = uuid4()
	}
	err = sh.store.mutate(func(st *state) (bool, error) {
		if _, so := st.so("fileio", name); so != nil {
			return false, execErr("Storage object fileio/%s exists", name)
		}
		// The kernel opens the backing file O_RDWR even with
		// write_back=false: on a read-only mount enabling the object
		// fails, and rtslib removes it again.
		if readOnlyMount(file) {
			return false, crashErr("OSError", "[Errno 30] Read-only file system")
		}
		// configfs lists the newest object first, and so does rtslib's dump.
		st.StorageObjects = slices.Insert(st.StorageObjects, 0, storageObject{
			Plugin: "fileio", Name: name, Dev: file, Size: n, WWN: wwn, WriteBack: writeBack,
		})
		return true, nil
	})
	if err != nil {
		return err
	}
	if slices.Contains(sh.view.backstores["fileio"], name) {
		return crashErr("ValueError", "Name '%s' already used by a sibling.", name)
	}
	sh.view.backstores["fileio"] = append(sh.view.backstores["fileio"], name)
	sh.info("Created fileio %s with size %d", name, n)
	return nil
}

func createFile(path string, size int64, sparse bool) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return execErr("Could not open %s", path)
	}
	defer f.Close()
	if sparse {
		err = f.Truncate(size)
	} else {
		zero := make([]byte, 1024)
		for left := size; left > 0 && err == nil; left -= 1024 {
			_, err = f.Write(zero[:min(left, 1024)])
		}
	}
	if err != nil {
		os.Remove(path)
		return execErr("Could not expand file to %d bytes", size)
	}
	return nil
}

func (sh *shell) cmdBackstoreDelete(node []string, p params) error {
	plugin, name := node[1], p["name"]
	if !slices.Contains(sh.view.backstores[plugin], name) {
		return execErr("No storage object named %s.", name)
	}
	save, err := evalBool(p, "save", false)
	if err != nil {
		return err
	}
	if save {
		if err := sh.saveBackups(sh.cfg.SaveFile); err != nil {
			return err
		}
	}
	err = sh.store.mutate(func(st *state) (bool, error) {
		i, _ := st.so(plugin, name)
		if i < 0 {
			cls := map[string]string{"fileio": "FileIOStorageObject", "block": "BlockStorageObject",
				"pscsi": "PSCSIStorageObject", "ramdisk": "RDMCPStorageObject"}[plugin]
			return false, execErr("This %s does not exist in configFS", cls)
		}
		st.deleteSO(i)
		return true, nil
	})
	if err != nil {
		return err
	}
	// Only the backstore node goes; LUN nodes of other subtrees stay (stale).
	sh.view.backstores[plugin] = slices.DeleteFunc(sh.view.backstores[plugin], func(s string) bool { return s == name })
	sh.info("Deleted storage object %s.", name)
	return nil
}

const maxLUN = 65535

// cmdLunCreate is UILUNs.ui_command_create with rtslib's LUN().
func (sh *shell) cmdLunCreate(node []string, p params) error {
	fabric, wwn := node[0], node[1]
	tag, _ := strconv.Atoi(strings.TrimPrefix(node[2], "tpg"))
	addMapped, err := evalBool(p, "add_mapped_luns", true)
	if err != nil {
		return err
	}
	soNode, err := sh.view.resolve(node, p["storage_object"])
	if err != nil || kind(soNode) != "so" {
		return execErr("storage object or path not valid")
	}
	plugin, name := soNode[1], soNode[2]
	soPath := "/backstores/" + plugin + "/" + name

	lunArg, lunGiven := p.get("lun")
	if lunGiven && lunArg != "" && strings.HasPrefix(strings.ToLower(lunArg), "lun") {
		lunArg = lunArg[3:]
	}
	var index int
	err = sh.store.mutate(func(st *state) (bool, error) {
		g := st.tpg(wwn, tag)
		if g == nil {
			return false, execErr("No such TPG in configfs: /sys/kernel/config/target/%s/%s/tpgt_%d", fabric, wwn, tag)
		}
		for _, l := range g.LUNs {
			if l.SO == soPath {
				return false, execErr("lun for storage object %s/%s already exists", plugin, name)
			}
		}
		if lunGiven {
			n, err := strconv.Atoi(strings.TrimSpace(lunArg))
			if err != nil {
				return false, crashErr("ValueError", "invalid literal for int() with base 10: '%s'", lunArg)
			}
			if n < 0 || n > maxLUN {
				return false, execErr("LUN must be 0 to %d", maxLUN)
			}
			index = n
		} else {
			// The lowest free index (LUNs are listed newest first, not
			// by index).
			used := make(map[int]bool, len(g.LUNs))
			for _, l := range g.LUNs {
				used[l.Index] = true
			}
			for index = 0; used[index]; index++ {
			}
			if index > maxLUN {
				return false, execErr("All LUNs 0-%d in use", maxLUN)
			}
		}
		if g.lunAt(index) >= 0 {
			return false, execErr("This LUN already exists in configFS")
		}
		if _, so := st.so(plugin, name); so == nil {
			return false, execErr("storage_object does not exist in configFS")
		}
		g.addLUN(lun{Index: index, SO: soPath, Alias: uuid4()[26:], ALUA: "default_tg_pt_gp"})
		return true, nil
	})
	if err != nil {
		return err
	}
	sh.info("Created LUN %d.", index)
	vg := sh.view.tpg(fabric, wwn, tag)
	if vg == nil {
		return nil
	}
	if slices.Contains(vg.luns, index) {
		// The LUN exists in the kernel, but this process's tree still
		// holds a node of that name (e.g. from a deleted backstore).
		return crashErr("ValueError", "Name 'lun%d' already used by a sibling.", index)
	}
	vg.luns = append(vg.luns, index)
	if !addMapped {
		return nil
	}
	var created []string
	err = sh.store.mutate(func(st *state) (bool, error) {
		g := st.tpg(wwn, tag)
		if g == nil {
			return false, nil
		}
		for ai := range g.NodeACLs {
			a := &g.NodeACLs[ai]
			used := map[int]bool{}
			for _, m := range a.MappedLUNs {
				used[m.Index] = true
			}
			mapped := 0
			if lunGiven {
				mapped = index
			}
			for ; used[mapped] && mapped <= maxLUN; mapped++ {
			}
			if mapped > maxLUN {
				created = append(created, fmt.Sprintf("Cannot map new lun %d into ACL %s", index, a.NodeWWN))
				continue
			}
			a.MappedLUNs = append(a.MappedLUNs, mappedLUN(mapped, index))
			created = append(created, fmt.Sprintf("Created LUN %d->%d mapping in node ACL %s", index, mapped, a.NodeWWN))
		}
		return len(g.NodeACLs) > 0, nil
	})
	if err != nil {
		return err
	}
	for _, c := range created {
		sh.info("%s", c)
	}
	st, err := sh.store.read()
	if err != nil {
		return err
	}
	sh.view.refreshTPG(st, fabric, wwn, tag)
	return nil
}

func (sh *shell) cmdLunDelete(node []string, p params) error {
	fabric, wwn := node[0], node[1]
	tag, _ := strconv.Atoi(strings.TrimPrefix(node[2], "tpg"))
	lunArg := p["lun"]
	if strings.HasPrefix(strings.ToLower(lunArg), "lun") {
		lunArg = lunArg[3:]
	}
	err := sh.store.mutate(func(st *state) (bool, error) {
		g := st.tpg(wwn, tag)
		n, err := strconv.Atoi(strings.TrimSpace(lunArg))
		if g == nil || err != nil || n < 0 || n > maxLUN || g.lunAt(n) < 0 {
			return false, execErr("Invalid LUN")
		}
		g.deleteLUN(g.lunAt(n))
		return true, nil
	})
	if err != nil {
		return err
	}
	sh.info("Deleted LUN %s.", lunArg)
	st, err := sh.store.read()
	if err != nil {
		return err
	}
	sh.view.refreshTPG(st, fabric, wwn, tag)
	return nil
}

func (sh *shell) cmdSaveconfig(_ []string, p params) error {
	file := p["savefile"]
	if file == "" {
		file = sh.cfg.SaveFile
	}
	return sh.saveconfig(expandUser(file))
}

func uuid4() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// absPath is used for the save file default comparison.
func absPath(p string) string {
	if a, err := filepath.Abs(p); err == nil {
		return a
	}
	return p
}
