package gate

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// fakeKubectl writes an executable shell script standing in for kubectl.
// It records its arguments, one a line, in the returned args file, then
// runs body.
func fakeKubectl(t *testing.T, body string) (bin, argsFile string) {
	t.Helper()
	dir := t.TempDir()
	bin = filepath.Join(dir, "kubectl")
	argsFile = filepath.Join(dir, "args")
	script := "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\n' \"$a\"; done > " + argsFile + "\n" + body + "\n"
	if err := os.WriteFile(bin, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return bin, argsFile
}

func TestKubectl(t *testing.T) {
	tests := []struct {
		name     string
		body     string
		wantOpen bool
		wantWhy  string // substring
		wantErr  string // substring; "" = no error
	}{
		{name: "labelled", body: "printf sbps", wantOpen: true, wantWhy: "is labelled iscsi=sbps"},
		{name: "labelled with newline", body: "echo sbps", wantOpen: true, wantWhy: "is labelled iscsi=sbps"},
		{name: "no label", body: "exit 0", wantWhy: "has no iscsi label"},
		{name: "other value", body: "printf SBPS", wantWhy: `iscsi="SBPS", not sbps`},
		{name: "node not found", body: `echo 'Error from server (NotFound): nodes "ncn-w001" not found' >&2; exit 1`,
			wantErr: "NotFound"},
		{name: "api down", body: "echo 'The connection to the server was refused' >&2; exit 1",
			wantErr: "connection to the server was refused"},
		{name: "hangs", body: "sleep 30; printf sbps", wantErr: "kubectl took longer than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			bin, argsFile := fakeKubectl(t, tt.body)
			g, err := Parse("kubectl", "ncn-w001", bin, "", nil)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			g.(*Kubectl).Timeout = 300 * time.Millisecond
			start := time.Now()
			open, why, err := g.Open(t.Context())
			took := time.Since(start)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Open() error = %v, want one containing %q", err, tt.wantErr)
				}
				// The whole process group is killed at the timeout: no wait
				// for the orphaned sleep (WaitDelay is 2s).
				if took > 1500*time.Millisecond {
					t.Errorf("Open() took %v, want the timeout (300ms) plus a little", took)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open() error = %v", err)
			}
			if open != tt.wantOpen || !strings.Contains(why, tt.wantWhy) {
				t.Errorf("Open() = %v, %q; want %v, %q", open, why, tt.wantOpen, tt.wantWhy)
			}
			args, err := os.ReadFile(argsFile)
			if err != nil {
				t.Fatal(err)
			}
			want := "get\nnode\nncn-w001\n-o\njsonpath={.metadata.labels.iscsi}\n"
			if string(args) != want {
				t.Errorf("kubectl args = %q, want %q", args, want)
			}
		})
	}
}

func TestKubectlCanceled(t *testing.T) {
	bin, _ := fakeKubectl(t, "sleep 30")
	g, err := NewKubectl("ncn-w001", bin, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(100*time.Millisecond, cancel)
	start := time.Now()
	if _, _, err := g.Open(ctx); err == nil {
		t.Fatal("Open() with a canceled context = nil error")
	}
	if took := time.Since(start); took > 1500*time.Millisecond {
		t.Errorf("Open() took %v after cancel, want about 100ms", took)
	}
}

func TestFile(t *testing.T) {
	dir := t.TempDir()
	present := filepath.Join(dir, "open")
	if err := os.WriteFile(present, []byte("closed\n"), 0o644); err != nil { // content is ignored
		t.Fatal(err)
	}
	locked := filepath.Join(dir, "locked")
	if err := os.Mkdir(locked, 0o000); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(locked, 0o755) })
	type fileCase struct {
		name     string
		path     string
		wantOpen bool
		wantWhy  string
		wantErr  bool
	}
	tests := []fileCase{
		{name: "exists", path: present, wantOpen: true, wantWhy: "exists"},
		{name: "directory", path: dir, wantOpen: true, wantWhy: "exists"},
		{name: "missing", path: filepath.Join(dir, "absent"), wantWhy: "is missing"},
		{name: "missing dir", path: filepath.Join(dir, "absent", "x"), wantWhy: "is missing"},
		{name: "not a dir", path: filepath.Join(present, "x"), wantErr: true},
	}
	if os.Geteuid() != 0 { // root reads through mode 000
		tests = append(tests, fileCase{name: "unreadable dir", path: filepath.Join(locked, "x"), wantErr: true})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := Parse("file:"+tt.path, "", "", "", nil)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			open, why, err := g.Open(t.Context())
			if tt.wantErr {
				if err == nil {
					t.Fatalf("Open() = %v, %q, nil; want an error", open, why)
				}
				return
			}
			if err != nil || open != tt.wantOpen || !strings.Contains(why, tt.wantWhy) {
				t.Errorf("Open() = %v, %q, %v; want %v, %q, nil", open, why, err, tt.wantOpen, tt.wantWhy)
			}
		})
	}
}

func TestFileFollowsTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "gate")
	g := File{Path: p}
	for i, want := range []bool{false, true, false} {
		switch i {
		case 1:
			if err := os.WriteFile(p, nil, 0o644); err != nil {
				t.Fatal(err)
			}
		case 2:
			if err := os.Remove(p); err != nil {
				t.Fatal(err)
			}
		}
		if open, why, err := g.Open(t.Context()); err != nil || open != want {
			t.Errorf("step %d: Open() = %v, %q, %v; want %v", i, open, why, err, want)
		}
	}
}

func TestNone(t *testing.T) {
	g, err := Parse("none", "", "", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	if open, _, err := g.Open(t.Context()); !open || err != nil {
		t.Errorf("none: Open() = %v, %v; want true, nil", open, err)
	}
}

func TestParseRejects(t *testing.T) {
	bin, _ := fakeKubectl(t, "printf sbps")
	notExec := filepath.Join(t.TempDir(), "kubectl")
	if err := os.WriteFile(notExec, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, spec, node, bin, want string
	}{
		{"empty spec", "", "n1", bin, "unknown gate"},
		{"unknown", "label", "n1", bin, "unknown gate"},
		{"upper case", "KUBECTL", "n1", bin, "unknown gate"},
		{"relative file", "file:gate", "", "", "absolute path"},
		{"empty file", "file:", "", "", "absolute path"},
		{"empty node", "kubectl", "", bin, "is empty"},
		{"option as node", "kubectl", "--kubeconfig=/tmp/x", bin, "RFC 1123"},
		{"dash node", "kubectl", "-n1", bin, "RFC 1123"},
		{"space in node", "kubectl", "n1 n2", bin, "RFC 1123"},
		{"shell in node", "kubectl", "n1;reboot", bin, "RFC 1123"},
		{"upper node", "kubectl", "NCN-W001", bin, "RFC 1123"},
		{"trailing dot", "kubectl", "n1.", bin, "empty or over-long"},
		{"long node", "kubectl", strings.Repeat("a", 254), bin, "longer than 253"},
		{"long label", "kubectl", strings.Repeat("a", 64), bin, "empty or over-long"},
		{"relative bin", "kubectl", "n1", "kubectl", "clean absolute path"},
		{"unclean bin", "kubectl", "n1", "/usr/bin/../bin/kubectl", "clean absolute path"},
		{"space in bin", "kubectl", "n1", "/usr/bin/kube ctl", "character other than"},
		{"missing bin", "kubectl", "n1", "/nonexistent/kubectl", "no such file"},
		{"not executable", "kubectl", "n1", notExec, "not an executable"},
		{"directory bin", "kubectl", "n1", filepath.Dir(bin), "not an executable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := Parse(tt.spec, tt.node, tt.bin, "", nil)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Parse(%q, %q, %q) = %v, %v; want an error containing %q", tt.spec, tt.node, tt.bin, g, err, tt.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	bin, _ := fakeKubectl(t, "printf sbps")
	for _, node := range []string{"ncn-w001", "x3000c0s7b0n0", "node1.nmn", "a", strings.Repeat("a", 63)} {
		if _, err := Parse("kubectl", node, bin, "", nil); err != nil {
			t.Errorf("Parse(kubectl, %q) = %v", node, err)
		}
	}
}

func TestOpenRechecksFields(t *testing.T) {
	bin, _ := fakeKubectl(t, "printf sbps")
	for _, k := range []*Kubectl{{Node: "-oyaml", Bin: bin}, {Node: "n1", Bin: "kubectl"}} {
		if _, _, err := k.Open(t.Context()); err == nil {
			t.Errorf("Open() on %+v = nil error, want the check to refuse", *k)
		}
	}
}

// TestKubectlKubeconfig: the kubeconfig reaches kubectl as one
// --kubeconfig= argument; a missing one is named, not left to kubectl.
func TestKubectlKubeconfig(t *testing.T) {
	bin, argsFile := fakeKubectl(t, "printf sbps")
	dir := t.TempDir()
	kc := filepath.Join(dir, "admin.conf")
	if err := os.WriteFile(kc, []byte("apiVersion: v1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	g, err := Parse("kubectl", "ncn-w001", bin, kc, nil)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	if open, why, err := g.Open(t.Context()); err != nil || !open {
		t.Fatalf("Open() = %v, %q, %v; want open", open, why, err)
	}
	args, err := os.ReadFile(argsFile)
	if err != nil {
		t.Fatal(err)
	}
	if want := "get\nnode\nncn-w001\n-o\njsonpath={.metadata.labels.iscsi}\n--kubeconfig=" + kc + "\n"; string(args) != want {
		t.Errorf("kubectl args = %q, want %q", args, want)
	}

	for _, tc := range []struct{ name, path, want string }{
		{"missing", filepath.Join(dir, "absent.conf"), "no such file or directory"},
		{"directory", dir, "not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g, err := Parse("kubectl", "ncn-w001", bin, tc.path, nil)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			_, _, err = g.Open(t.Context())
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) || !strings.Contains(err.Error(), "SBPS_MARSHAL_KUBECONFIG") {
				t.Fatalf("Open() with kubeconfig %s = %v, want an error naming it, %q and SBPS_MARSHAL_KUBECONFIG", tc.path, err, tc.want)
			}
		})
	}
}

func TestParseRejectsKubeconfig(t *testing.T) {
	bin, _ := fakeKubectl(t, "printf sbps")
	for _, tc := range []struct{ name, kc, want string }{
		{"relative", "admin.conf", "clean absolute path"},
		{"unclean", "/etc/kubernetes/../admin.conf", "clean absolute path"},
		{"space", "/etc/kube config", "character other than"},
		{"equals", "/etc/a=b", "character other than"},
		{"newline", "/etc/admin.conf\n--insecure-skip-tls-verify", "character other than"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("kubectl", "ncn-w001", bin, tc.kc, nil)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "SBPS_MARSHAL_KUBECONFIG") {
				t.Fatalf("Parse(kubeconfig %q) = %v, want an error containing %q and SBPS_MARSHAL_KUBECONFIG", tc.kc, err, tc.want)
			}
		})
	}
	k := &Kubectl{Node: "n1", Bin: bin, Kubeconfig: "relative.conf"}
	if _, _, err := k.Open(t.Context()); err == nil {
		t.Error("Open() with a relative Kubeconfig set directly = nil error, want the check to refuse")
	}
}
