package config

import (
	"bytes"
	"encoding/json"
	"slices"
	"strings"
	"testing"
)

// TestKeysKindAndChoices: Keys carries what shell completion needs, and a
// key's Choices are exactly the values Load accepts.
func TestKeysKindAndChoices(t *testing.T) {
	kinds := map[string]bool{"string": true, "path": true, "bool": true, "seconds": true, "duration": true, "float": true, "choice": true, "list": true}
	for _, k := range Keys() {
		if !kinds[k.Kind] {
			t.Errorf("%s: Kind %q, want one of %v", k.Env, k.Kind, kinds)
		}
		if (k.Kind == "choice" || k.Kind == "bool") != (len(k.Choices) > 0) {
			t.Errorf("%s: Kind %q with Choices %q", k.Env, k.Kind, k.Choices)
		}
		for _, v := range k.Choices {
			// Refused from the flag itself, not for a combination with other keys.
			if _, err := load(t, []string{k.Flag + "=" + v}); err != nil && strings.Contains(err.Error(), "(from flag "+k.Flag+")") {
				t.Errorf("%s=%s, one of its Choices, is refused: %v", k.Env, v, err)
			}
		}
		if k.Kind == "choice" {
			if _, err := load(t, []string{k.Flag + "=not-a-choice"}); err == nil {
				t.Errorf("%s=not-a-choice is accepted", k.Env)
			}
		}
	}
	byEnv := func(env string) Key {
		i := slices.IndexFunc(Keys(), func(k Key) bool { return k.Env == env })
		if i < 0 {
			t.Fatalf("no key %s", env)
		}
		return Keys()[i]
	}
	if k := byEnv("SBPS_MARSHAL_S3_PROTO"); k.Kind != "choice" || !slices.Equal(k.Choices, []string{"https", "http"}) {
		t.Errorf("S3_PROTO = %+v", k)
	}
	if k := byEnv("SBPS_MARSHAL_LIO_SAVE_FILE"); k.Kind != "path" {
		t.Errorf("LIO_SAVE_FILE Kind = %q, want path", k.Kind)
	}
	// Callers may not change the table through a returned slice.
	keys := Keys()
	keys[slices.IndexFunc(keys, func(k Key) bool { return k.Env == "SBPS_MARSHAL_S3_PROTO" })].Choices[0] = "changed"
	if k := byEnv("SBPS_MARSHAL_S3_PROTO"); k.Choices[0] != "https" {
		t.Errorf("Keys shares its Choices with the table: %q", k.Choices)
	}
	if k := EnvFileKey(); k.Flag != "--env-file" || k.Env != EnvPrefix+"ENV_FILE" || k.Kind != "path" || k.Default != DefaultEnvFile {
		t.Errorf("EnvFileKey() = %+v", k)
	}
}

// TestPrintJSON: the same values as Print, secrets redacted, one object.
func TestPrintJSON(t *testing.T) {
	c, err := load(t, nil, "SBPS_MARSHAL_NATS_URL=nats://user:hunter2@n1:4222")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := c.PrintJSON(&buf); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(buf.String(), "hunter2") {
		t.Errorf("PrintJSON leaks a NATS password:\n%s", buf.String())
	}
	var m map[string]string
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("PrintJSON output is not one JSON object: %v\n%s", err, buf.String())
	}
	if len(m) != len(Keys()) || m["SBPS_MARSHAL_TARGET_IQN"] != "iqn.2023-06.csm.iscsi:ncn-w001" || m["SBPS_MARSHAL_NATS_URL"] != "nats://<redacted>@n1:4222" {
		t.Errorf("PrintJSON = %v (%d keys, want %d)", m, len(m), len(Keys()))
	}
}
