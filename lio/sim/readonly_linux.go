package sim

import (
	"path/filepath"
	"syscall"
)

// stRdonly is ST_RDONLY in statfs's f_flags.
const stRdonly = 0x1

// readOnlyMount reports whether path's file system is mounted read-only
// (statfs's ST_RDONLY), where the kernel's O_RDWR open of a fileio backing
// file fails with EROFS.
func readOnlyMount(path string) bool {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		if err := syscall.Statfs(filepath.Dir(path), &st); err != nil {
			return false
		}
	}
	return st.Flags&stRdonly != 0
}
