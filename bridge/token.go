package bridge

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// maxTokenFile bounds a token file in bytes.
const maxTokenFile = 4 << 10

// ReadTokenFile reads the webhook's shared token (BRIDGE_TOKEN_FILE): one
// word, surrounding white space ignored. Like every secret of the agent, the
// file must be a regular file that group and others can neither read nor
// write. Errors say how to fix the file; they never contain the token.
func ReadTokenFile(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("bridge: BRIDGE_TOKEN_FILE: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return "", fmt.Errorf("bridge: BRIDGE_TOKEN_FILE %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("bridge: BRIDGE_TOKEN_FILE %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("bridge: BRIDGE_TOKEN_FILE %s has mode %#o, open to group or others; run chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(fh, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("bridge: BRIDGE_TOKEN_FILE %s: %w", path, err)
	}
	if len(b) > maxTokenFile {
		return "", fmt.Errorf("bridge: BRIDGE_TOKEN_FILE %s is larger than %d bytes; it should hold one token", path, maxTokenFile)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("bridge: BRIDGE_TOKEN_FILE %s is empty; write the shared token into it", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("bridge: BRIDGE_TOKEN_FILE %s holds more than one word; it should hold one token", path)
	}
	return tok, nil
}
