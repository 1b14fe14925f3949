package ims

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestTokenFile(t *testing.T) {
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
		errHas  string
	}{
		{"ok with newline", "eyJhbGciOi.payload.sig\n", 0o600, "eyJhbGciOi.payload.sig", ""},
		{"owner read only", "tok", 0o400, "tok", ""},
		{"group readable", "tok", 0o640, "", "chmod 600"},
		{"world readable", "tok", 0o604, "", "chmod 600"},
		{"empty", "\n", 0o600, "", "empty"},
		{"two words", "a b", 0o600, "", "one bearer token"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "token")
			if err := os.WriteFile(p, []byte(tt.content), tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, tt.mode); err != nil { // umask-proof
				t.Fatal(err)
			}
			got, err := TokenFile(p).Token(t.Context())
			if tt.errHas != "" {
				if err == nil || !strings.Contains(err.Error(), tt.errHas) {
					t.Fatalf("Token() = %q, %v; want error containing %q", got, err, tt.errHas)
				}
				if strings.Contains(err.Error(), "tok\"") {
					t.Errorf("error leaks the token: %v", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Token() = %q, %v; want %q", got, err, tt.want)
			}
		})
	}

	t.Run("missing file", func(t *testing.T) {
		if _, err := TokenFile(filepath.Join(t.TempDir(), "nope")).Token(t.Context()); err == nil || !strings.Contains(err.Error(), "IMS_TOKEN_FILE") {
			t.Errorf("Token() of a missing file = %v, want an error naming IMS_TOKEN_FILE", err)
		}
	})

	t.Run("cached until Invalidate", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "token")
		write := func(s string) {
			if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		write("one")
		src := TokenFile(p)
		if got, _ := src.Token(t.Context()); got != "one" {
			t.Fatalf("Token() = %q, want one", got)
		}
		write("two")
		if got, _ := src.Token(t.Context()); got != "one" {
			t.Errorf("Token() after rewrite without Invalidate = %q, want the cached one", got)
		}
		src.Invalidate()
		if got, _ := src.Token(t.Context()); got != "two" {
			t.Errorf("Token() after Invalidate = %q, want two", got)
		}
	})

	t.Run("NoToken", func(t *testing.T) {
		if got, err := (NoToken{}).Token(t.Context()); got != "" || err != nil {
			t.Errorf("NoToken.Token() = %q, %v", got, err)
		}
	})
}
