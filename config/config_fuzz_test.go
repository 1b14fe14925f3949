package config

import (
	"bytes"
	"flag"
	"io"
	"strings"
	"testing"
)

// FuzzLoadEnv feeds arbitrary SBPS_MARSHAL_* values through Load: it never
// panics, a value it refuses gets an error naming the key, and a NATS
// password in an accepted NATS_URL never shows in the printed configuration.
func FuzzLoadEnv(f *testing.F) {
	for _, k := range keys {
		f.Add(k.name, k.def)
	}
	f.Add("NATS_URL", "nats://user:s3cretPW@nats:4222")
	f.Add("RESYNC_INTERVAL", "-1h")
	f.Add("IMS_TIMEOUT", "99999999999999999999")
	f.Add("MAX_DELETE_FRACTION", "NaN")
	f.Add("SCAN_FREQUENCY", "0x10")
	f.Add("TARGET_IQN", "iqn.2023-06.csm.iscsi:ncn-w001 ; rm -rf /")
	f.Fuzz(func(t *testing.T, name, value string) {
		if strings.ContainsAny(name, "=\x00") {
			return
		}
		env := []string{EnvPrefix + name + "=" + value, "SBPS_MARSHAL_NATS_URL=nats://sbps:fuzzPassw0rd@127.0.0.1:4222"}
		if name == "NATS_URL" {
			env = env[:1]
		}
		fs := flag.NewFlagSet("fuzz", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		cfg, _, err := Load(Sources{Environ: env, Hostname: func() (string, error) { return "ncn-w001", nil }}, fs)
		if err != nil {
			if !strings.Contains(err.Error(), EnvPrefix) && known(name) {
				t.Fatalf("Load refused %s=%q with an error naming no key: %v", name, value, err)
			}
			return
		}
		var out bytes.Buffer
		if err := cfg.Print(&out); err != nil {
			t.Fatalf("Print: %v", err)
		}
		if name != "NATS_URL" && strings.Contains(out.String(), "fuzzPassw0rd") {
			t.Fatalf("the NATS password shows in the printed configuration:\n%s", out.String())
		}
		if name == "NATS_URL" {
			// A password of the URL forms user:password@host: it must not be
			// printed, unless it also occurs in the rest of the value.
			for _, u := range strings.Split(value, ",") {
				at := strings.LastIndex(u, "@")
				scheme := strings.Index(u, "://")
				if at < 0 || scheme < 0 || at < scheme {
					continue
				}
				_, pass, ok := strings.Cut(u[scheme+3:at], ":")
				rest := strings.Replace(value, u[scheme+3:at+1], "", 1)
				if ok && len(pass) >= 8 && !strings.Contains(rest, pass) && strings.Contains(out.String(), pass) {
					t.Fatalf("NATS password %q printed:\n%s", pass, out.String())
				}
			}
		}
	})
}
