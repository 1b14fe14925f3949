package svid

import (
	"fmt"
	"os"
	"regexp"
	"strings"
)

// xnamePattern matches a CSM component name such as x3000c0s1b0n0: "x" and
// a cabinet number, then letter+number pairs.
var xnamePattern = regexp.MustCompile(`^x[0-9]+(?:[a-z]+[0-9]+)*$`)

// ReadXName reads the node's xname from path (XNAME_FILE, on CSM /etc/cray/xname),
// trimming surrounding whitespace, and checks that it is a well-formed xname
// so it can go into a SPIFFE ID.
func ReadXName(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("read node xname: %w", err)
	}
	xname := strings.TrimSpace(string(b))
	if err := ValidateXName(xname); err != nil {
		return "", fmt.Errorf("node xname in %s: %w", path, err)
	}
	return xname, nil
}

// ValidateXName reports whether xname is a well-formed lower-case xname.
func ValidateXName(xname string) error {
	if !xnamePattern.MatchString(xname) {
		return fmt.Errorf("%q is not an xname (want the form x3000c0s1b0n0)", xname)
	}
	return nil
}
