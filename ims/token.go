package ims

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
)

// TokenSource yields the bearer token for IMS requests. An empty token means
// "send no Authorization header".
type TokenSource interface {
	Token(ctx context.Context) (string, error)
}

// Invalidator is implemented by token sources that cache: after a 401 the
// client calls Invalidate and asks for a fresh token once.
type Invalidator interface {
	Invalidate()
}

// NoToken is the TokenSource for IMS_AUTH=none: requests carry no
// Authorization header.
type NoToken struct{}

// Token returns "".
func (NoToken) Token(context.Context) (string, error) { return "", nil }

// maxTokenFile bounds a token file; JWTs are a few KiB.
const maxTokenFile = 64 << 10

// FileToken reads a bearer token from a file (IMS_AUTH=token-file). The
// token is cached after the first read and re-read after Invalidate. The file
// must not be readable or writable by group or others. Safe for concurrent
// use.
type FileToken struct {
	path string

	mu    sync.Mutex
	token string // guarded by mu; "" means read the file again
}

var (
	_ TokenSource = (*FileToken)(nil)
	_ Invalidator = (*FileToken)(nil)
	_ TokenSource = NoToken{}
)

// TokenFile returns a FileToken for path. Nothing is read until Token.
func TokenFile(path string) *FileToken { return &FileToken{path: path} }

// Token returns the cached token or reads the file.
func (f *FileToken) Token(ctx context.Context) (string, error) {
	if err := ctx.Err(); err != nil {
		return "", err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.token != "" {
		return f.token, nil
	}
	tok, err := readTokenFile(f.path)
	if err != nil {
		return "", err
	}
	f.token = tok
	return tok, nil
}

// Invalidate drops the cached token so the next Token re-reads the file.
func (f *FileToken) Invalidate() {
	f.mu.Lock()
	f.token = ""
	f.mu.Unlock()
}

func readTokenFile(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("ims: read token file: %w (set IMS_TOKEN_FILE to a readable file)", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return "", fmt.Errorf("ims: stat token file %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("ims: token file %s is not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return "", fmt.Errorf("ims: token file %s has mode %#o, readable or writable by group/others; run chmod 600 %s", path, perm, path)
	}
	b, err := io.ReadAll(io.LimitReader(fh, maxTokenFile+1))
	if err != nil {
		return "", fmt.Errorf("ims: read token file %s: %w", path, err)
	}
	if len(b) > maxTokenFile {
		return "", fmt.Errorf("ims: token file %s is larger than %d bytes; it should hold one bearer token", path, maxTokenFile)
	}
	tok := strings.TrimSpace(string(b))
	if tok == "" {
		return "", fmt.Errorf("ims: token file %s is empty; write the bearer token into it", path)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return "", fmt.Errorf("ims: token file %s holds more than one word; it should hold one bearer token", path)
	}
	return tok, nil
}
