package main

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/sbps-marshal/sbps-marshal/config"
)

// runCLI runs the command with no env file and the given environment.
func runCLI(env []string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := mainWith("", args, &out, &errb, env)
	return code, out.String(), errb.String()
}

// TestParseArgs (issue 16): flags go before or after the command and its
// argument; each command takes only its own flags.
func TestParseArgs(t *testing.T) {
	tests := []struct {
		name  string
		args  []string
		cmd   string
		sub   string
		flags []string
		help  bool
	}{
		{"no command is run", nil, "run", "", nil, false},
		{"config flag alone is run", []string{"--log-level", "debug"}, "run", "", []string{"--log-level", "debug"}, false},
		{"json before", []string{"--json", "status"}, "status", "", []string{"--json"}, false},
		{"json after", []string{"status", "--json"}, "status", "", []string{"--json"}, false},
		{"single dash", []string{"status", "-json"}, "status", "", []string{"-json"}, false},
		{"config flag before", []string{"--log-level", "debug", "sync"}, "sync", "", []string{"--log-level", "debug"}, false},
		{"config flag with =", []string{"sync", "--log-level=debug", "--renumber"}, "sync", "", []string{"--log-level=debug", "--renumber"}, false},
		{"bridge flags around its argument", []string{"--nats-url", "nats://n:4222", "bridge", "ims", "--log-level", "warn"}, "bridge", "ims", []string{"--nats-url", "nats://n:4222", "--log-level", "warn"}, false},
		{"bridge flag between", []string{"bridge", "--env-file", "", "webhook"}, "bridge", "webhook", []string{"--env-file", ""}, false},
		{"a value that looks like a command", []string{"--node-name", "status", "plan"}, "plan", "", []string{"--node-name", "status"}, false},
		{"--version", []string{"--version"}, "version", "", nil, false},
		{"--help", []string{"--help"}, "help", "", nil, true},
		{"-h", []string{"-h"}, "help", "", nil, true},
		{"help plan", []string{"help", "plan"}, "help", "plan", nil, true},
		{"plan -h", []string{"plan", "-h"}, "plan", "", []string{}, true},
		{"help wins over a bad flag", []string{"run", "--json", "--help"}, "run", "", []string{"--json"}, true},
		{"completion bash", []string{"completion", "bash"}, "completion", "bash", nil, false},
		{"resync --all", []string{"--all", "resync"}, "resync", "", []string{"--all"}, false},
		{"-- ends flags", []string{"--", "status"}, "status", "", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inv, err := parseArgs(tt.args)
			if err != nil {
				t.Fatalf("parseArgs(%q) = %v", tt.args, err)
			}
			if inv.cmd.Name != tt.cmd || inv.sub != tt.sub || !slices.Equal(inv.flags, tt.flags) || inv.help != tt.help {
				t.Errorf("parseArgs(%q) = %s %q %q help=%v, want %s %q %q help=%v", tt.args, inv.cmd.Name, inv.sub, inv.flags, inv.help, tt.cmd, tt.sub, tt.flags, tt.help)
			}
		})
	}
}

// TestUsageErrors (issue 16): a command line that is not understood goes
// to stderr with where the help is, nothing on stdout, exit 64: not 1 (a
// failure of the command) and not 2 (plan's "something would change").
func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string // in stderr
	}{
		{[]string{"stat"}, `unknown command "stat"; did you mean status?`},
		{[]string{"bogus"}, `unknown command "bogus"`},
		{[]string{"plan", "--bogus"}, "sbps-marshal plan: unknown flag --bogus\nRun 'sbps-marshal help plan' for usage."},
		{[]string{"--jsn", "status"}, "unknown flag --jsn; did you mean --json?"},
		{[]string{"plan", "extra"}, `sbps-marshal plan: unexpected argument "extra"`},
		{[]string{"run", "--json"}, "sbps-marshal run: --json does not apply to run; it applies to plan, status, config, doctor"},
		{[]string{"--json", "sync"}, "--json does not apply to sync"},
		{[]string{"resync", "--json"}, "--json does not apply to resync"},
		{[]string{"bridge", "ims", "--json"}, "--json does not apply to bridge"},
		{[]string{"version", "--json"}, "--json does not apply to version"},
		{[]string{"status", "--all"}, "--all does not apply to status; it applies to resync"},
		{[]string{"plan", "--allow-mass-delete"}, "--allow-mass-delete does not apply to plan; it applies to sync"},
		{[]string{"resync", "--renumber"}, "--renumber does not apply to resync; it applies to sync"},
		{[]string{"--log-level", "debug", "version"}, "--log-level does not apply: version reads no configuration"},
		{[]string{"man", "--env-file", "/x"}, "--env-file does not apply: man reads no configuration"},
		{[]string{"status", "--version"}, "--version goes alone"},
		{[]string{"plan", "--json=maybe"}, "--json=maybe: want --json, --json=true or --json=false"},
		{[]string{"plan", "--s3-host"}, "--s3-host needs a value"},
		{[]string{"bridge"}, "sbps-marshal bridge: which one? webhook or ims"},
		{[]string{"bridge", "rgw"}, `unknown argument "rgw", want webhook or ims`},
		{[]string{"completion"}, "which one? bash"},
		{[]string{"completion", "zsh"}, `unknown argument "zsh", want bash`},
		{[]string{"help", "bogus"}, `sbps-marshal help: unknown command "bogus"`},
		{[]string{"help", "plan", "sync"}, `unexpected argument "sync"`},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(nil, tt.args...)
			if code != exitUsage || out != "" || !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, "for usage.") {
				t.Errorf("sbps-marshal %q = %d, stdout %q, stderr %q; want %d, nothing on stdout, stderr with %q and where the help is", tt.args, code, out, errOut, exitUsage, tt.want)
			}
		})
	}
	// A bad value is the configuration's error, not a usage error.
	if code, _, errOut := runCLI(nil, "config", "--ims-tagging=True"); code != exitError || !strings.Contains(errOut, "SBPS_MARSHAL_IMS_TAGGING") {
		t.Errorf("config --ims-tagging=True = %d %q, want %d naming the key", code, errOut, exitError)
	}
}

// TestHelp (issue 16): --help, -h and help <command> print to stdout and
// exit 0; each command's help lists its flags and says where the
// configuration keys are; the top level lists every key.
func TestHelp(t *testing.T) {
	code, top, errOut := runCLI(nil, "--help")
	if code != 0 || errOut != "" {
		t.Fatalf("--help = %d, stderr %q", code, errOut)
	}
	for _, k := range append(config.Keys(), config.EnvFileKey()) {
		if !strings.Contains(top, k.Env) || !strings.Contains(top, k.Flag+" ") {
			t.Errorf("--help lacks %s / %s", k.Env, k.Flag)
		}
	}
	for _, c := range commands {
		if !strings.Contains(top, "\n  "+c.Name+" ") {
			t.Errorf("--help does not list command %s", c.Name)
		}
	}
	for _, want := range []string{"\n  64  usage error", "\n  2   plan: something would change", "\n  3   status: ", "--version"} {
		if !strings.Contains(top, want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	for _, args := range [][]string{{"-h"}, {"help"}} {
		if code, out, _ := runCLI(nil, args...); code != 0 || out != top {
			t.Errorf("%q = %d, differs from --help", args, code)
		}
	}

	for _, c := range commands {
		t.Run(c.Name, func(t *testing.T) {
			code, out, errOut := runCLI(nil, c.Name, "--help")
			if code != 0 || errOut != "" || !strings.HasPrefix(out, "Usage:\n  sbps-marshal "+c.Name) {
				t.Fatalf("%s --help = %d, stderr %q:\n%s", c.Name, code, errOut, out)
			}
			for _, args := range [][]string{{c.Name, "-h"}, {"help", c.Name}, {"--help", c.Name}} {
				if code, o, _ := runCLI(nil, args...); code != 0 || o != out {
					t.Errorf("%q = %d, differs from %s --help", args, code, c.Name)
				}
			}
			for _, f := range c.Flags {
				if !strings.Contains(out, "\n  --"+f.Name+" ") {
					t.Errorf("%s --help does not list --%s:\n%s", c.Name, f.Name, out)
				}
			}
			if strings.Contains(out, "\x1b[") {
				t.Errorf("%s --help is coloured", c.Name)
			}
			switch {
			case c.Name == "config":
				for _, k := range config.Keys() {
					if !strings.Contains(out, k.Env) {
						t.Errorf("help config lacks %s", k.Env)
					}
				}
			case c.Config:
				if !strings.Contains(out, "sbps-marshal help config lists all") || strings.Contains(out, "SBPS_MARSHAL_SCAN_FREQUENCY") {
					t.Errorf("%s --help should point at sbps-marshal help config, not list the keys:\n%s", c.Name, out)
				}
			default:
				if strings.Contains(out, "Configuration:") {
					t.Errorf("%s reads no configuration, its help says it does:\n%s", c.Name, out)
				}
			}
		})
	}
	// bridge's argument can come with --help too.
	if code, out, _ := runCLI(nil, "bridge", "ims", "--help"); code != 0 || !strings.HasPrefix(out, "Usage:\n  sbps-marshal bridge webhook|ims") {
		t.Errorf("bridge ims --help = %d:\n%s", code, out)
	}
}

func TestVersion(t *testing.T) {
	for _, args := range [][]string{{"version"}, {"--version"}, {"version", "--version"}} {
		if code, out, errOut := runCLI(nil, args...); code != 0 || !strings.HasPrefix(out, "sbps-marshal ") || errOut != "" {
			t.Errorf("%q = %d %q %q", args, code, out, errOut)
		}
	}
}

// TestFlagsBeforeOrAfter (issue 16): sbps-marshal --json config is
// sbps-marshal config --json, and config --json is the configuration as JSON.
func TestFlagsBeforeOrAfter(t *testing.T) {
	env := []string{"SBPS_MARSHAL_NODE_NAME=ncn-w009"}
	code, after, errOut := runCLI(env, "config", "--json", "--log-level", "debug")
	if code != 0 {
		t.Fatalf("config --json = %d %s", code, errOut)
	}
	var m map[string]string
	if err := json.Unmarshal([]byte(after), &m); err != nil || m["SBPS_MARSHAL_TARGET_IQN"] != "iqn.2023-06.csm.iscsi:ncn-w009" || m["SBPS_MARSHAL_LOG_LEVEL"] != "debug" {
		t.Errorf("config --json = %v %v:\n%s", m, err, after)
	}
	for _, args := range [][]string{{"--json", "config", "--log-level", "debug"}, {"--log-level", "debug", "--json", "config"}, {"--log-level=debug", "config", "-json"}} {
		if code, out, _ := runCLI(env, args...); code != 0 || out != after {
			t.Errorf("%q = %d:\n%s\nwant as config --json --log-level debug:\n%s", args, code, out, after)
		}
	}
	if code, out, _ := runCLI(env, "config", "--json=false"); code != 0 || !strings.Contains(out, "SBPS_MARSHAL_TARGET_IQN=iqn.2023-06.csm.iscsi:ncn-w009\n") {
		t.Errorf("config --json=false = %d, want the env file form:\n%s", code, out)
	}
}

// TestDoctorOnBadConfiguration: doctor still runs when the configuration
// does not load (it reports it as a row), and takes --json before or after.
func TestDoctorOnBadConfiguration(t *testing.T) {
	for _, args := range [][]string{{"doctor", "--json", "--ims-tagging=True"}, {"--json", "--ims-tagging=True", "doctor"}} {
		code, out, errOut := runCLI(nil, args...)
		var rows []map[string]any
		if err := json.Unmarshal([]byte(out), &rows); code != exitError || err != nil || len(rows) == 0 || !strings.Contains(out, "SBPS_MARSHAL_IMS_TAGGING") {
			t.Errorf("%q = %d %v, want 1 and JSON rows naming the key:\n%s%s", args, code, err, out, errOut)
		}
	}
}
