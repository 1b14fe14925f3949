package sim

import (
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"

	"github.com/sbps-marshal/sbps-marshal/lio"
)

// maxBackupFiles is targetcli's max_backup_files default.
const maxBackupFiles = 10

func mappedLUN(mapped, tpgLUN int) lio.MappedLUN {
	return lio.MappedLUN{Index: mapped, TPGLUN: tpgLUN, WriteProtect: false}
}

// saveconfig is UIRoot.ui_command_saveconfig: create the directory, back up
// the old file (default save file only), write the live state with rtslib's
// save_to_file.
func (sh *shell) saveconfig(file string) error {
	if err := createDir(filepath.Dir(file)); err != nil {
		return err
	}
	if err := sh.saveBackups(file); err != nil {
		return err
	}
	st, err := sh.store.read()
	if err != nil {
		return err
	}
	data, err := lio.Marshal(st.config())
	if err != nil {
		return err
	}
	f, err := readFaults(sh.store.dir)
	if err != nil {
		return err
	}
	if err := sh.saveToFile(file, data, f); err != nil {
		return err
	}
	sh.info("Configuration saved to %s", file)
	return nil
}

// errText is an error's strerror as Python prints it ("Read-only file
// system", capitalised).
func errText(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	s := err.Error()
	if s != "" && s[0] >= 'a' && s[0] <= 'z' {
		s = string(s[0]-'a'+'A') + s[1:]
	}
	return s
}

// createDir is UIRoot._create_dir: a missing save folder is made with mode
// 0600; an existing one is chmod'ed to 0600 (a failure is an uncaught
// OSError). Only as root, as targetcli's saveconfig runs only as root: a
// folder of mode 0600 cannot be entered by anyone else, and the
// simulator's node directory may be the save folder.
func createDir(dir string) error {
	asRoot := os.Geteuid() == 0
	fi, err := os.Stat(dir)
	if err != nil {
		mode := os.FileMode(0o700)
		if asRoot {
			mode = 0o600
		}
		if err := os.MkdirAll(dir, mode); err != nil {
			return execErr("Cannot create directory [%s] %s.", dir, errText(err))
		}
		return nil
	}
	if asRoot && fi.Mode().Perm() != 0o600 {
		if err := os.Chmod(dir, 0o600); err != nil {
			return crashErr("OSError", "[Errno %d] %s: '%s'", errno(err), errText(err), dir)
		}
	}
	return nil
}

func errno(err error) int {
	var en syscall.Errno
	if errors.As(err, &en) {
		return int(en)
	}
	return 0
}

// saveToFile is rtslib's RTSRoot.save_to_file: write <file>.temp (0600,
// O_EXCL after removing a stale one, fsync), then either copy it over the
// file in place (2.1.75: truncate and write, so readers can catch an empty or
// partial file) or rename it into place (2.2).
func (sh *shell) saveToFile(file string, data []byte, f Faults) error {
	tmp := file + ".temp"
	os.Remove(tmp)
	t, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return execErr("Could not open %s", tmp)
	}
	half := len(data) / 2
	if _, err := t.Write(data[:half]); err != nil {
		t.Close()
		return execErr("Could not write %s: %s", tmp, errText(err))
	}
	if f.SaveMode == SaveRename {
		if err := sleep(sh.ctx, f.SavePause); err != nil {
			t.Close()
			return err
		}
	}
	if _, err := t.Write(data[half:]); err != nil {
		t.Close()
		return execErr("Could not write %s: %s", tmp, errText(err))
	}
	if err := t.Sync(); err != nil {
		t.Close()
		return execErr("Could not write %s: %s", tmp, errText(err))
	}
	if err := t.Close(); err != nil {
		return execErr("Could not write %s: %s", tmp, errText(err))
	}
	if f.SaveMode == SaveRename {
		if err := os.Rename(tmp, file); err != nil {
			return execErr("Could not rename %s: %s", tmp, errText(err))
		}
		return os.Chmod(file, 0o600)
	}
	// shutil.copy: open the destination for writing (truncating it), copy,
	// then copy the mode bits.
	dst, err := os.OpenFile(file, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return execErr("Could not open %s: %s", file, errText(err))
	}
	_, err = dst.Write(data[:half])
	if err == nil {
		err = sleep(sh.ctx, f.SavePause)
	}
	if err == nil {
		_, err = dst.Write(data[half:])
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return execErr("Could not write %s: %s", file, errText(err))
	}
	if err := os.Chmod(file, 0o600); err != nil {
		return err
	}
	return os.Remove(tmp)
}

// saveBackups is UIRoot._save_backups (targetcli 2.1.53): only for the
// default save file, only when it exists and differs from the newest backup;
// backups are gzip files backup/saveconfig-YYYYMMDD-HH:MM:SS-json.gz and the
// newest max_backup_files are kept.
func (sh *shell) saveBackups(file string) error {
	if absPath(file) != absPath(sh.cfg.SaveFile) {
		return nil
	}
	dir := filepath.Join(filepath.Dir(file), "backup")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return execErr("Cannot create directory [%s/] %s.", dir, errText(err))
	}
	cur, err := os.ReadFile(file)
	if err != nil {
		return nil // only save backups if the save file exists
	}
	old, _ := filepath.Glob(filepath.Join(dir, "saveconfig-*json*"))
	sort.Strings(old)
	if len(old) > 0 {
		if prev, err := readBackup(old[len(old)-1]); err == nil && bytes.Equal(prev, cur) {
			return nil
		}
	}
	name := filepath.Join(dir, "saveconfig-"+time.Now().Format("20060102-15:04:05")+"-json.gz")
	var buf bytes.Buffer
	// rtslib compresses at level 9; any level reads back the same, and a
	// node of 10,000 LUNs has a 20 MB file to compress at every save.
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
	zw.Write(cur)
	zw.Close()
	if err := os.WriteFile(name, buf.Bytes(), 0o600); err != nil {
		sh.info("Could not create backup file %s: %s.", name, errText(err))
		return nil
	}
	// The list was taken before the new file: keep max-1 old ones.
	for i := len(old) - maxBackupFiles; i >= 0; i-- {
		if old[i] != name {
			os.Remove(old[i])
		}
	}
	sh.info("Last %d configs saved in %s/.", maxBackupFiles, dir)
	return nil
}

func readBackup(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if filepath.Ext(path) != ".gz" {
		return io.ReadAll(f)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(zr)
}
