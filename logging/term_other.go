//go:build !linux

package logging

import (
	"io"
	"os"
)

// isTerminal reports whether w is a character device (a terminal, most
// likely).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
