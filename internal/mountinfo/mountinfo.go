// Package mountinfo reads the kernel's mount table, /proc/<pid>/mountinfo
// (proc(5)), as the agent's doctor and the test rig need it: which file
// system is mounted where.
package mountinfo

import (
	"os"
	"strings"
)

// Self is this process's mount table.
const Self = "/proc/self/mountinfo"

// Entry is one mount.
type Entry struct {
	MountPoint string // unescaped
	FSType     string // e.g. fuse.s3fs
	Source     string // e.g. s3fs
}

// Parse reads the lines of a mountinfo file: "id parent major:minor root
// mountpoint options [optional...] - fstype source superoptions". Lines it
// cannot read are skipped.
func Parse(data string) []Entry {
	var out []Entry
	for line := range strings.SplitSeq(data, "\n") {
		before, after, ok := strings.Cut(line, " - ")
		if !ok {
			continue
		}
		fields, rest := strings.Fields(before), strings.Fields(after)
		if len(fields) < 5 || len(rest) < 2 {
			continue
		}
		out = append(out, Entry{MountPoint: Unescape(fields[4]), FSType: rest[0], Source: rest[1]})
	}
	return out
}

// Read parses the mount table at path (Self for this process's).
func Read(path string) ([]Entry, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(string(data)), nil
}

// Find returns the last entry mounted at mountPoint (a later mount hides
// an earlier one), or false.
func Find(entries []Entry, mountPoint string) (Entry, bool) {
	for i := len(entries) - 1; i >= 0; i-- {
		if entries[i].MountPoint == mountPoint {
			return entries[i], true
		}
	}
	return Entry{}, false
}

// Unescape undoes the kernel's octal escapes in mountinfo paths (\040 for
// a space, \011 for a tab, \134 for a backslash); anything else is kept.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if v, ok := octal3(s[i+1 : i+4]); ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func octal3(s string) (byte, bool) {
	v := 0
	for _, c := range s {
		if c < '0' || c > '7' {
			return 0, false
		}
		v = v*8 + int(c-'0')
	}
	return byte(v), v < 256
}
