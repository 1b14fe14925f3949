package uml

import (
	"context"
	"strings"
	"testing"
)

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain":        "'plain'",
		"it's":         `'it'\''s'`,
		"$HOME `x` \\": "'$HOME `x` \\'",
		"":             "''",
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q) = %s, want %s", in, got, want)
		}
	}
}

func TestRunRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	cases := []struct {
		name string
		cfg  Config
		argv []string
		want string
	}{
		{"no command", Config{}, nil, "no command"},
		{"no kernel", Config{Kernel: "/nonexistent/linux.uml"}, []string{"true"}, "apt-get install user-mode-linux"},
		{"scratch outside /tmp", Config{Scratch: t.TempDir() + "/../../../var/x"}, []string{"true"}, "must be under /tmp"},
		{"bad env", Config{Env: []string{"A B=1"}}, []string{"true"}, "shell variable name"},
		{"env without =", Config{Env: []string{"AB"}}, []string{"true"}, "not KEY=value"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Run(ctx, c.cfg, c.argv...)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Run: err = %v, want one containing %q", err, c.want)
			}
		})
	}
}

func TestStage2Environment(t *testing.T) {
	g := guest{scratch: "/tmp/x", env: []string{"GODEBUG=madvdontneed=1", "A=it's"}, argv: []string{"echo", "a b"}}
	s := g.stage2Script()
	for _, want := range []string{
		"export GODEBUG='madvdontneed=1,cpu.avx512f=off'\n",
		`export A='it'\''s'` + "\n",
		"'echo' 'a b' > /tmp/x/output 2>&1 < /dev/null\n",
		"modprobe $m",
		"dbus-daemon --system --fork",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("stage2 script lacks %q:\n%s", want, s)
		}
	}
}
