// Package config reads the agent's configuration: every key of the old
// Python agent, with its old default, plus the keys this agent adds.
//
// Each key is read, in order of precedence, from a command-line flag
// (--scan-frequency), the environment (SBPS_MARSHAL_SCAN_FREQUENCY), an
// optional env file in systemd EnvironmentFile form, and finally its default.
// Unlike the old agent, every value is validated: a bad one stops the agent
// with one line naming the key, the value and what is expected.
package config

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/systemctl"
)

// EnvPrefix is the prefix of every environment key.
const EnvPrefix = "SBPS_MARSHAL_"

// DefaultEnvFile is the service's settings file, the unit's
// EnvironmentFile. The command reads it when no --env-file or
// SBPS_MARSHAL_ENV_FILE names another, so that a command run in a shell
// sees the configuration the service runs with.
const DefaultEnvFile = "/etc/sysconfig/sbps-marshal"

// Config is the validated configuration.
type Config struct {
	// Old agent's keys (NOTES §1).
	ScanFrequency        time.Duration // SCAN_FREQUENCY, seconds; default 180
	APIGateway           string        // API_GATEWAY
	IMSURI               string        // IMS_URI
	IMSTagging           bool          // IMS_TAGGING
	IMSTimeout           time.Duration // IMS_TIMEOUT, seconds
	S3Timeout            time.Duration // S3_TIMEOUT, seconds
	S3Host               string        // S3_HOST
	S3Proto              string        // S3_PROTO: http or https
	S3CredentialFile     string        // S3_CREDENTIAL_FILE; empty = the AWS SDK's default chain
	S3Bucket             string        // S3_BUCKET
	Mount                string        // SQUASHFS_S3FS_MOUNT
	SpireAgentPath       string        // SPIRE_AGENT_PATH: the SPIRE agent CLI (SPIFFE_SOURCE)
	SPIFFESource         string        // SPIFFE_SOURCE: auto, cli, workload-api
	SpireJWTAudience     string        // SPIRE_JWT_AUDIENCE
	SpireAgentSock       string        // SPIRE_AGENT_SOCK_PATH
	LIOSaveFile          string        // LIO_SAVE_FILE
	TargetcliBin         string        // TARGETCLI_BIN
	ResyncInterval       time.Duration // RESYNC_INTERVAL; falls back to SCAN_FREQUENCY
	NodeName             string        // NODE_NAME; default the host name
	TargetIQN            string        // TARGET_IQN; default iqn.2023-06.csm.iscsi:<node>
	PEPrefix             string        // PE_PREFIX
	IMSAuth              string        // IMS_AUTH: spiffe, token-file, none
	IMSTokenFile         string        // IMS_TOKEN_FILE
	CAFile               string        // CA_FILE: extra CA for IMS and S3, added to the system pool
	TLSInsecure          bool          // TLS_INSECURE_SKIP_VERIFY: no certificate verification for IMS and S3
	XNameFile            string        // XNAME_FILE
	TargetcliMode        string        // TARGETCLI_MODE: batch, oneshot, daemon
	TargetclidSocket     string        // TARGETCLID_SOCKET
	TargetcliTimeout     time.Duration // TARGETCLI_TIMEOUT
	StateDir             string        // STATE_DIR
	MaxDeleteFraction    float64       // MAX_DELETE_FRACTION
	AllowWritableTPG     bool          // ALLOW_WRITABLE_TPG
	NATSURL              []string      // NATS_URL, comma list; empty = no bus
	NATSCreds            string        // NATS_CREDS
	NATSNKeySeed         string        // NATS_NKEY_SEED
	NATSTLSCA            string        // NATS_TLS_CA
	NATSTLSCert          string        // NATS_TLS_CERT
	NATSTLSKey           string        // NATS_TLS_KEY
	NATSSPIFFE           bool          // NATS_SPIFFE
	NATSSPIFFEServer     string        // NATS_SPIFFE_SERVER_ID
	NATSS3Subject        string        // NATS_S3_SUBJECT
	NATSIMSSubject       string        // NATS_IMS_SUBJECT
	NATSStream           string        // NATS_STREAM
	MetricsAddr          string        // METRICS_ADDR; empty disables
	LogFormat            string        // LOG_FORMAT: auto, text, json, logfmt
	LogLevel             string        // LOG_LEVEL: debug, info, warn, error
	Gate                 string        // GATE: kubectl, file:<path>, none
	KubectlBin           string        // KUBECTL_BIN
	Kubeconfig           string        // KUBECONFIG; empty = kubectl's own lookup
	SystemctlBin         string        // SYSTEMCTL_BIN; empty = never start TARGET_SERVICE
	TargetService        string        // TARGET_SERVICE
	TargetServiceTimeout time.Duration // TARGET_SERVICE_TIMEOUT
	LUNRegistry          string        // LUN_REGISTRY: auto, nats, local, off (the agent resolves auto at start)
	LUNKVBucket          string        // LUN_KV_BUCKET
	LUNQuarantine        time.Duration // LUN_QUARANTINE
	LUNRegistryWait      time.Duration // LUN_REGISTRY_TIMEOUT
	BridgeListen         string        // BRIDGE_LISTEN
	BridgeTokenFile      string        // BRIDGE_TOKEN_FILE
	BridgeTLSCert        string        // BRIDGE_TLS_CERT
	BridgeTLSKey         string        // BRIDGE_TLS_KEY
	BridgePoll           time.Duration // BRIDGE_POLL_INTERVAL
	NATSResyncSubject    string        // NATS_RESYNC_SUBJECT

	// EnvFile is the env file the values were read from; empty when none
	// was (the default file absent, or --env-file "").
	EnvFile string

	effective map[string]string // key -> value as resolved, for Print

	// Notices are things an operator should know about the configuration
	// that are not errors (an ignored key, a default that changed).
	Notices []string
}

type kind int

const (
	kString kind = iota
	kPath        // absolute path or empty
	kBool
	kSeconds  // integer seconds
	kDuration // Go duration or integer seconds
	kFloat
	kChoice
	kList
)

// key describes one configuration key.
type key struct {
	name    string // without the prefix: SCAN_FREQUENCY
	def     string
	kind    kind
	choices []string
	help    string
	set     func(c *Config, v string) error
}

func (k key) env() string  { return EnvPrefix + k.name }
func (k key) flag() string { return strings.ReplaceAll(strings.ToLower(k.name), "_", "-") }

// keys lists every key; the order is the order of `sbps-marshal config`.
var keys = []key{
	{name: "SCAN_FREQUENCY", def: "180", kind: kSeconds, help: "old agent's scan period in seconds; the default for RESYNC_INTERVAL",
		set: func(c *Config, v string) error { return setSeconds(&c.ScanFrequency, v) }},
	{name: "RESYNC_INTERVAL", def: "", kind: kDuration, help: "period of the full resync safety net (e.g. 10m or 600); empty = SCAN_FREQUENCY",
		set: func(c *Config, v string) error { return setDur(&c.ResyncInterval, v, false) }},
	{name: "API_GATEWAY", def: "https://api-gw-service-nmn.local", help: "base URL of the CSM API gateway",
		set: func(c *Config, v string) error { c.APIGateway = strings.TrimRight(v, "/"); return checkURL(v) }},
	{name: "IMS_URI", def: "apis/ims/v3/images", help: "path of IMS's image list under API_GATEWAY",
		set: func(c *Config, v string) error { c.IMSURI = strings.Trim(v, "/"); return nil }},
	{name: "IMS_TAGGING", def: "true", kind: kBool, help: `project only IMS images tagged metadata["sbps-project"]="true" (images of an IMS without metadata are always projected)`,
		set: func(c *Config, v string) error { return setBool(&c.IMSTagging, v) }},
	{name: "IMS_TIMEOUT", def: "10", kind: kSeconds, help: "timeout of one IMS request, seconds",
		set: func(c *Config, v string) error { return setSeconds(&c.IMSTimeout, v) }},
	{name: "S3_TIMEOUT", def: "30", kind: kSeconds, help: "timeout of one S3 request (a HEAD, a GET, a page of a listing, retries included), seconds; a slower S3 fails the pass as an outage does",
		set: func(c *Config, v string) error { return setSeconds(&c.S3Timeout, v) }},
	{name: "S3_HOST", def: "rgw-vip.nmn", help: "S3 endpoint host[:port] (Ceph RGW in CSM)",
		set: func(c *Config, v string) error { c.S3Host = v; return checkHost(v) }},
	{name: "S3_PROTO", def: "https", kind: kChoice, choices: []string{"https", "http"}, help: "S3 endpoint scheme",
		set: func(c *Config, v string) error { c.S3Proto = v; return nil }},
	{name: "S3_CREDENTIAL_FILE", def: "/root/.ims.s3fs", kind: kPath, help: "file with one line KEYID:SECRET, mode 0600; empty = the AWS SDK's default credential chain",
		set: func(c *Config, v string) error { c.S3CredentialFile = v; return nil }},
	{name: "S3_BUCKET", def: "boot-images", help: "bucket holding the images",
		set: func(c *Config, v string) error { c.S3Bucket = v; return checkBucket(v) }},
	{name: "SQUASHFS_S3FS_MOUNT", def: "/var/lib/cps-local/boot-images", kind: kPath, help: "where s3fs mounts the bucket; only fileio backstores under it are managed",
		set: func(c *Config, v string) error { c.Mount = v; return nonEmpty(v) }},
	{name: "SPIRE_AGENT_PATH", def: "/usr/bin/sbps-marshal-spire-agent", kind: kPath, help: "the SPIRE agent CLI the old agent ran, `api fetch jwt|x509`: CSM's SPIRE issues spiffe://shasta/ncn/workload/sbps-marshal only to this hard link of spire-agent (selector unix:path), so the agent runs it for its SVIDs (see SPIFFE_SOURCE)",
		set: func(c *Config, v string) error { c.SpireAgentPath = v; return checkPlainPath(v) }},
	{name: "SPIFFE_SOURCE", def: "auto", kind: kChoice, choices: []string{"auto", "cli", "workload-api"}, help: "where the JWT-SVID (IMS) and X.509-SVID (NATS_SPIFFE) come from: cli runs SPIRE_AGENT_PATH, as CSM registers it; workload-api calls the Workload API at SPIRE_AGENT_SOCK_PATH from this process (SPIRE must have an entry for this binary's path); auto = cli when SPIRE_AGENT_PATH exists and is executable, else workload-api",
		set: func(c *Config, v string) error { c.SPIFFESource = v; return nil }},
	{name: "SPIRE_JWT_AUDIENCE", def: "system-compute", help: "audience of the JWT-SVID presented to IMS",
		set: func(c *Config, v string) error { c.SpireJWTAudience = v; return checkAudience(v) }},
	{name: "SPIRE_AGENT_SOCK_PATH", def: "/var/lib/spire/agent.sock", kind: kPath, help: "SPIRE agent Workload API socket",
		set: func(c *Config, v string) error { c.SpireAgentSock = v; return checkPlainPath(v) }},
	{name: "LIO_SAVE_FILE", def: "/etc/target/saveconfig.json", kind: kPath, help: "LIO's saved state",
		set: func(c *Config, v string) error { c.LIOSaveFile = v; return nonEmpty(v) }},
	{name: "TARGETCLI_BIN", def: "/usr/bin/targetcli", kind: kPath, help: "targetcli executable",
		set: func(c *Config, v string) error { c.TargetcliBin = v; return nonEmpty(v) }},
	{name: "NODE_NAME", def: "", help: "this node's name; empty = the host name",
		set: func(c *Config, v string) error { c.NodeName = v; return nil }},
	{name: "TARGET_IQN", def: "", help: "iSCSI target the LUNs go into; empty = iqn.2023-06.csm.iscsi:<NODE_NAME>",
		set: func(c *Config, v string) error { c.TargetIQN = v; return nil }},
	{name: "PE_PREFIX", def: "PE/", help: "S3 key prefix of programming-environment images",
		set: func(c *Config, v string) error { c.PEPrefix = v; return checkPrefix(v) }},
	{name: "IMS_AUTH", def: "spiffe", kind: kChoice, choices: []string{"spiffe", "token-file", "none"}, help: "how to authenticate to IMS",
		set: func(c *Config, v string) error { c.IMSAuth = v; return nil }},
	{name: "IMS_TOKEN_FILE", def: "", kind: kPath, help: "bearer token file for IMS_AUTH=token-file (mode 0600)",
		set: func(c *Config, v string) error { c.IMSTokenFile = v; return nil }},
	{name: "CA_FILE", def: "", kind: kPath, help: "PEM CA bundle trusted for IMS and S3 in addition to the system pool (on SLES /etc/ssl/ca-bundle.pem, which holds CSM's platform CA once update-ca-certificates folded in /etc/pki/trust/anchors/platform-ca-certs.crt); empty = the system pool alone",
		set: func(c *Config, v string) error { c.CAFile = v; return nil }},
	{name: "TLS_INSECURE_SKIP_VERIFY", def: "false", kind: kBool, help: "true = do not verify the certificates of IMS and S3, as the old agent never did (it had no key for it); warned about at every start. Prefer CA_FILE, or S3_PROTO=http for S3 as the s3fs mount of boot-images uses",
		set: func(c *Config, v string) error { return setBool(&c.TLSInsecure, v) }},
	{name: "XNAME_FILE", def: "/etc/cray/xname", kind: kPath, help: "file holding this node's xname (for the xname form of the SPIFFE ID)",
		set: func(c *Config, v string) error { c.XNameFile = v; return nil }},
	{name: "TARGETCLI_MODE", def: string(lio.Batch), kind: kChoice, choices: modeNames(), help: "how targetcli is driven: one process per batch, per command, or targetclid",
		set: func(c *Config, v string) error { c.TargetcliMode = v; _, err := lio.ParseMode(v); return err }},
	{name: "TARGETCLID_SOCKET", def: "/var/run/targetclid.sock", kind: kPath, help: "targetclid socket for TARGETCLI_MODE=daemon",
		set: func(c *Config, v string) error { c.TargetclidSocket = v; return nil }},
	{name: "TARGETCLI_TIMEOUT", def: "2m", kind: kDuration, help: "longest one targetcli process or request may take before it is killed",
		set: func(c *Config, v string) error { return setDur(&c.TargetcliTimeout, v, true) }},
	{name: "STATE_DIR", def: "/var/lib/sbps-marshal", kind: kPath, help: "the agent's own state: lock, pid file, targetcli home",
		set: func(c *Config, v string) error { c.StateDir = v; return nonEmpty(v) }},
	{name: "MAX_DELETE_FRACTION", def: "0.5", kind: kFloat, help: "refuse a pass that would delete more than this fraction of managed projections (0 < f <= 1)",
		set: func(c *Config, v string) error { return setFraction(&c.MaxDeleteFraction, v) }},
	{name: "ALLOW_WRITABLE_TPG", def: "false", kind: kBool, help: "project even into a TPG that does not write-protect its LUNs",
		set: func(c *Config, v string) error { return setBool(&c.AllowWritableTPG, v) }},
	{name: "NATS_URL", def: "", kind: kList, help: "NATS servers, comma separated; empty = no event bus, periodic resync only",
		set: func(c *Config, v string) error { return setURLs(&c.NATSURL, v) }},
	{name: "NATS_CREDS", def: "", kind: kPath, help: "NATS credentials file",
		set: func(c *Config, v string) error { c.NATSCreds = v; return nil }},
	{name: "NATS_NKEY_SEED", def: "", kind: kPath, help: "NATS nkey seed file",
		set: func(c *Config, v string) error { c.NATSNKeySeed = v; return nil }},
	{name: "NATS_TLS_CA", def: "", kind: kPath, help: "CA bundle that verifies the NATS servers' certificates (host name checked); empty = the system roots or, with NATS_SPIFFE=true, the SPIRE trust bundle",
		set: func(c *Config, v string) error { c.NATSTLSCA = v; return nil }},
	{name: "NATS_TLS_CERT", def: "", kind: kPath, help: "client certificate for NATS mTLS",
		set: func(c *Config, v string) error { c.NATSTLSCert = v; return nil }},
	{name: "NATS_TLS_KEY", def: "", kind: kPath, help: "client key for NATS mTLS",
		set: func(c *Config, v string) error { c.NATSTLSKey = v; return nil }},
	{name: "NATS_SPIFFE", def: "false", kind: kBool, help: "NATS mTLS with the node's X.509-SVID from the Workload API (SPIRE_AGENT_SOCK_PATH) as client certificate, following its rotation (instead of NATS_TLS_CERT/KEY); the server's certificate must name the NATS_URL host and chain to NATS_TLS_CA or, without it, to the SPIRE trust bundle (see NATS_SPIFFE_SERVER_ID). While there is no SVID (SPIRE agent down) NATS is unreachable: resyncs only",
		set: func(c *Config, v string) error { return setBool(&c.NATSSPIFFE, v) }},
	{name: "NATS_SPIFFE_SERVER_ID", def: "", help: "with NATS_SPIFFE=true, for a NATS server presenting an X.509-SVID rather than a host-name certificate: the SPIFFE ID it must have (e.g. spiffe://shasta/ncn/nats), verified against the SPIRE trust bundle, host names unchecked; empty = check the host name",
		set: func(c *Config, v string) error { c.NATSSPIFFEServer = v; return checkSPIFFEID(v) }},
	{name: "NATS_S3_SUBJECT", def: "sbps.s3.events", help: "subject of S3 bucket notifications",
		set: func(c *Config, v string) error { c.NATSS3Subject = v; return checkSubject(v) }},
	{name: "NATS_IMS_SUBJECT", def: "sbps.ims.events", help: "subject of IMS change events",
		set: func(c *Config, v string) error { c.NATSIMSSubject = v; return checkSubject(v) }},
	{name: "NATS_STREAM", def: "", help: "JetStream stream holding both subjects; empty = plain subscriptions",
		set: func(c *Config, v string) error { c.NATSStream = v; return nil }},
	{name: "NATS_RESYNC_SUBJECT", def: "sbps.control.resync", help: "subject of fleet-wide resync requests (sbps-marshal resync --all)",
		set: func(c *Config, v string) error { c.NATSResyncSubject = v; return checkSubject(v) }},
	{name: "LUN_REGISTRY", def: "auto", kind: kChoice, choices: []string{"auto", "nats", "local", "off"}, help: "where LUN numbers are kept stable: auto (nats when NATS_URL is set and JetStream answers at start, else local with a warning), nats (JetStream KV, same numbers on every worker, a rebuilt worker gets its map back), local (STATE_DIR only), off (LIO picks the lowest free index, as the old agent)",
		set: func(c *Config, v string) error { c.LUNRegistry = v; return nil }},
	{name: "LUN_KV_BUCKET", def: "sbps-luns", help: "JetStream KV bucket of the fleet LUN registry",
		set: func(c *Config, v string) error { c.LUNKVBucket = v; return checkSubject(v) }},
	{name: "LUN_QUARANTINE", def: "24h", kind: kDuration, help: "how long a released LUN number stays reserved before another image may get it",
		set: func(c *Config, v string) error { return setDur(&c.LUNQuarantine, v, true) }},
	{name: "LUN_REGISTRY_TIMEOUT", def: "2s", kind: kDuration, help: "longest a projection waits for the fleet registry before using the local one",
		set: func(c *Config, v string) error { return setDur(&c.LUNRegistryWait, v, true) }},
	{name: "BRIDGE_LISTEN", def: "127.0.0.1:9588", help: "listen address of `sbps-marshal bridge webhook` (Ceph RGW HTTP push endpoint)",
		set: func(c *Config, v string) error { c.BridgeListen = v; return nonEmpty(v) }},
	{name: "BRIDGE_TOKEN_FILE", def: "", kind: kPath, help: "file holding the shared token the webhook bridge requires: RGW sends it as the password of its push-endpoint URL (https://sbps:<token>@host:port), or a client as Authorization: Bearer; empty = none",
		set: func(c *Config, v string) error { c.BridgeTokenFile = v; return nil }},
	{name: "BRIDGE_TLS_CERT", def: "", kind: kPath, help: "PEM certificate (chain) the webhook bridge serves HTTPS with, re-read when it changes; empty = plain HTTP",
		set: func(c *Config, v string) error { c.BridgeTLSCert = v; return nil }},
	{name: "BRIDGE_TLS_KEY", def: "", kind: kPath, help: "PEM private key of BRIDGE_TLS_CERT",
		set: func(c *Config, v string) error { c.BridgeTLSKey = v; return nil }},
	{name: "BRIDGE_POLL_INTERVAL", def: "5s", kind: kDuration, help: "how often `sbps-marshal bridge ims` lists IMS (one listing for the whole cluster; an IMS tag reaches the agents within this long)",
		set: func(c *Config, v string) error { return setDur(&c.BridgePoll, v, true) }},
	{name: "METRICS_ADDR", def: "127.0.0.1:9587", help: "listen address of /metrics, /healthz, /readyz; empty disables",
		set: func(c *Config, v string) error { c.MetricsAddr = v; return nil }},
	{name: "LOG_FORMAT", def: "auto", kind: kChoice, choices: []string{"auto", "text", "logfmt", "json"}, help: "auto = colour on a terminal, logfmt otherwise",
		set: func(c *Config, v string) error { c.LogFormat = v; return nil }},
	{name: "LOG_LEVEL", def: "info", kind: kChoice, choices: []string{"debug", "info", "warn", "error"}, help: "log level",
		set: func(c *Config, v string) error { c.LogLevel = v; return nil }},
	{name: "GATE", def: "kubectl", help: "node gate: kubectl (label iscsi=sbps), file:<path>, none",
		set: func(c *Config, v string) error { c.Gate = v; return checkGate(v) }},
	{name: "KUBECTL_BIN", def: "/usr/bin/kubectl", kind: kPath, help: "kubectl for GATE=kubectl",
		set: func(c *Config, v string) error { c.KubectlBin = v; return nil }},
	{name: "KUBECONFIG", def: "/etc/kubernetes/admin.conf", kind: kPath, help: "kubeconfig given to kubectl as --kubeconfig for GATE=kubectl (the old agent's fixed choice): a system service has no HOME, so kubectl would find no ~/.kube/config and fail on localhost:8080; empty = kubectl's own lookup (KUBECONFIG, ~/.kube/config), for a shell",
		set: func(c *Config, v string) error { c.Kubeconfig = v; return checkPlainPath(v) }},
	{name: "SYSTEMCTL_BIN", def: "/usr/bin/systemctl", kind: kPath, help: "systemctl the agent runs, as the old agent did, when the node is labelled but LIO lost what saveconfig.json holds: `is-active TARGET_SERVICE`, then `start TARGET_SERVICE` if it is not active; empty = never start it (the agent then only reports the condition)",
		set: func(c *Config, v string) error { c.SystemctlBin = v; return nil }},
	{name: "TARGET_SERVICE", def: "target.service", help: "the unit that restores saveconfig.json into the kernel (targetctl restore)",
		set: func(c *Config, v string) error { c.TargetService = v; return (systemctl.Unit{Name: v}).Check() }},
	{name: "TARGET_SERVICE_TIMEOUT", def: "90s", kind: kDuration, help: "bounds each systemctl call and the wait for LIO to hold saveconfig.json after starting TARGET_SERVICE",
		set: func(c *Config, v string) error { return setDur(&c.TargetServiceTimeout, v, true) }},
}

// Key describes one configuration key, for documentation, shell
// completion and tests.
type Key struct {
	Env, Flag, Default, Help string
	// Kind is what the value is: string, path (absolute path or empty),
	// bool, seconds (whole seconds), duration (a Go duration or whole
	// seconds), float, choice (one of Choices) or list (comma separated).
	Kind string
	// Choices are the values a bool or choice key accepts; nil for others.
	Choices []string
}

var kindNames = [...]string{kString: "string", kPath: "path", kBool: "bool", kSeconds: "seconds",
	kDuration: "duration", kFloat: "float", kChoice: "choice", kList: "list"}

// Keys lists every configuration key in the order `sbps-marshal config` prints them.
func Keys() []Key {
	out := make([]Key, len(keys))
	for i, k := range keys {
		out[i] = Key{Env: k.env(), Flag: "--" + k.flag(), Default: k.def, Help: k.help, Kind: kindNames[k.kind], Choices: slices.Clone(k.choices)}
		if k.kind == kBool {
			out[i].Choices = []string{"true", "false"}
		}
	}
	return out
}

const envFileHelp = "read KEY=VALUE lines (systemd EnvironmentFile form) below the environment and flags; default " + DefaultEnvFile + " when it exists, as the unit reads it; \"\" = none"

// EnvFileKey describes --env-file (SBPS_MARSHAL_ENV_FILE), which names the
// env file the keys of Keys are read from; it is not itself one of them.
func EnvFileKey() Key {
	return Key{Env: EnvPrefix + "ENV_FILE", Flag: "--env-file", Default: DefaultEnvFile, Help: envFileHelp, Kind: "path"}
}

// Error is a configuration error: one line naming the key, the value and
// what is expected.
type Error struct {
	Key, Value, Want string
	Source           string // "flag", "environment", "env file <path>", "default"
}

func (e *Error) Error() string {
	return fmt.Sprintf("configuration: %s=%q (from %s): %s", EnvPrefix+e.Key, e.Value, e.Source, e.Want)
}

// Sources says where values come from. Args are the command-line arguments
// after the subcommand; Environ is os.Environ() form.
type Sources struct {
	Args     []string
	Environ  []string
	Hostname func() (string, error)
	// DefaultEnvFile is read when neither --env-file nor
	// SBPS_MARSHAL_ENV_FILE names an env file; a missing one is silently
	// skipped (the unit's EnvironmentFile=- does the same). The command
	// passes DefaultEnvFile; empty = no default file (tests, libraries).
	DefaultEnvFile string
}

// Load resolves and validates the configuration. It returns the remaining
// (non-flag) arguments.
func Load(src Sources, fs *flag.FlagSet) (*Config, []string, error) {
	flags, envFile := defineFlags(fs)
	if err := fs.Parse(src.Args); err != nil {
		return nil, nil, err
	}
	l := layers{flags: flags, set: map[string]bool{}, env: prefixedEnv(src.Environ)}
	fs.Visit(func(f *flag.Flag) { l.set[f.Name] = true })

	path, origin, explicit := chooseEnvFile(src, l.env, l.set, *envFile)
	path, fileVals, err := readSettingsFile(path, origin, explicit)
	if err != nil {
		return nil, nil, err
	}
	l.file, l.filePath = fileVals, path

	c := &Config{EnvFile: path, effective: map[string]string{}}
	var errs []error
	for _, k := range keys {
		v, source := l.value(k)
		v = strings.TrimSpace(v)
		if err := k.apply(c, v); err != nil {
			errs = append(errs, &Error{Key: k.name, Value: v, Want: err.Error(), Source: source})
		}
		c.effective[k.name] = v
	}
	c.Notices = append(c.Notices, unknownKeyNotices(l.env)...)
	if len(errs) > 0 {
		return nil, nil, errors.Join(errs...)
	}
	if err := c.finish(src); err != nil {
		return nil, nil, err
	}
	slices.Sort(c.Notices)
	return c, fs.Args(), nil
}

// defineFlags defines --env-file and one string flag per key on fs; a flag
// left empty is told apart from one not given by fs.Visit.
func defineFlags(fs *flag.FlagSet) (flags map[string]*string, envFile *string) {
	flags = map[string]*string{}
	envFile = fs.String("env-file", "", envFileHelp+" (env "+EnvPrefix+"ENV_FILE)")
	for _, k := range keys {
		help := k.help + " (env " + k.env() + ")"
		if k.def != "" {
			help += fmt.Sprintf(" (default %q)", k.def)
		}
		flags[k.name] = fs.String(k.flag(), "", help)
	}
	return flags, envFile
}

// prefixedEnv returns the SBPS_MARSHAL_ variables of environ by key name
// (without the prefix).
func prefixedEnv(environ []string) map[string]string {
	env := map[string]string{}
	for _, kv := range environ {
		if k, v, ok := strings.Cut(kv, "="); ok && strings.HasPrefix(k, EnvPrefix) {
			env[strings.TrimPrefix(k, EnvPrefix)] = v
		}
	}
	return env
}

// chooseEnvFile picks the env file: --env-file over SBPS_MARSHAL_ENV_FILE
// over the default. origin names the choice for errors; explicit is false
// for the default, which may be missing.
func chooseEnvFile(src Sources, env map[string]string, set map[string]bool, flagValue string) (path, origin string, explicit bool) {
	path, origin, explicit = src.DefaultEnvFile, "the default, as the unit's EnvironmentFile", false
	if v, ok := env["ENV_FILE"]; ok {
		path, origin, explicit = v, EnvPrefix+"ENV_FILE", true
	}
	if set["env-file"] {
		path, origin, explicit = flagValue, "--env-file", true
	}
	return path, origin, explicit
}

// readSettingsFile reads the SBPS_MARSHAL_ keys of the env file at path by
// key name. A missing default file is no error: path comes back "" (no
// settings file: defaults, environment and flags).
func readSettingsFile(path, origin string, explicit bool) (string, map[string]string, error) {
	fileVals := map[string]string{}
	if path == "" {
		return path, fileVals, nil
	}
	vals, err := ReadEnvFile(path)
	switch {
	case err != nil && !explicit && errors.Is(err, os.ErrNotExist):
		path = ""
	case err != nil:
		return "", nil, envFileError(path, origin, err)
	}
	for k, v := range vals {
		if name, ok := strings.CutPrefix(k, EnvPrefix); ok {
			fileVals[name] = v
		}
	}
	return path, fileVals, nil
}

// layers are where a key's value comes from, by key name.
type layers struct {
	flags    map[string]*string
	set      map[string]bool // flags given, by flag name
	env      map[string]string
	file     map[string]string
	filePath string
}

// value is k's value and where it came from: a flag over the environment
// over the env file over the default.
func (l layers) value(k key) (v, source string) {
	v, source = k.def, "default"
	if fv, ok := l.file[k.name]; ok {
		v, source = fv, "env file "+l.filePath
	}
	if ev, ok := l.env[k.name]; ok {
		v, source = ev, "environment"
	}
	if l.set[k.flag()] {
		v, source = *l.flags[k.name], "flag --"+k.flag()
	}
	return v, source
}

// unknownKeyNotices names the SBPS_MARSHAL_ variables that are no key,
// probably typos.
func unknownKeyNotices(env map[string]string) []string {
	var notices []string
	for name := range env {
		if name != "ENV_FILE" && !known(name) {
			notices = append(notices, fmt.Sprintf("%s%s is not a known key and is ignored (typo?)", EnvPrefix, name))
		}
	}
	return notices
}

func known(name string) bool {
	return slices.ContainsFunc(keys, func(k key) bool { return k.name == name })
}

func (k key) apply(c *Config, v string) error {
	switch k.kind {
	case kPath:
		if v != "" && !filepath.IsAbs(v) {
			return errors.New("want an absolute path")
		}
		if v != "" && filepath.Clean(v) != v {
			return fmt.Errorf("want a clean absolute path (%s)", filepath.Clean(v))
		}
	case kChoice:
		if !slices.Contains(k.choices, v) {
			return fmt.Errorf("want one of %s", strings.Join(k.choices, ", "))
		}
	}
	return k.set(c, v)
}

// finish fills derived defaults and checks combinations of keys.
func (c *Config) finish(src Sources) error {
	if err := c.deriveDefaults(src); err != nil {
		return err
	}
	c.effective["RESYNC_INTERVAL"] = c.ResyncInterval.String()
	c.effective["NODE_NAME"] = c.NodeName
	c.effective["TARGET_IQN"] = c.TargetIQN
	if c.TLSInsecure {
		c.Notices = append(c.Notices, fmt.Sprintf("%sTLS_INSECURE_SKIP_VERIFY=true: TLS certificates are NOT verified for IMS (%s) and S3 (%s://%s), so anyone on the path can pose as them; trust their issuer with CA_FILE instead (or use S3_PROTO=http for S3, as the s3fs mount does)", EnvPrefix, c.APIGateway, c.S3Proto, c.S3Host))
	}
	if c.NATSSPIFFE && len(c.NATSURL) == 0 {
		c.Notices = append(c.Notices, EnvPrefix+"NATS_SPIFFE=true has no effect without "+EnvPrefix+"NATS_URL")
	}
	return c.checkCombinations()
}

// deriveDefaults fills the keys whose default comes from another key or
// from the host: RESYNC_INTERVAL, NODE_NAME and TARGET_IQN.
func (c *Config) deriveDefaults(src Sources) error {
	if c.ResyncInterval == 0 {
		c.ResyncInterval = c.ScanFrequency
	}
	if c.NodeName == "" {
		hostname := src.Hostname
		if hostname == nil {
			hostname = os.Hostname
		}
		h, err := hostname()
		if err != nil {
			return fmt.Errorf("configuration: %sNODE_NAME is empty and the host name is unknown (%v): set it", EnvPrefix, err)
		}
		c.NodeName, _, _ = strings.Cut(h, ".")
	}
	if c.TargetIQN == "" {
		c.TargetIQN = "iqn.2023-06.csm.iscsi:" + c.NodeName
	}
	return nil
}

// checkCombinations returns the first combination of keys that cannot work
// together, naming the key to fix.
func (c *Config) checkCombinations() error {
	bad := func(key, value, want string) error {
		return &Error{Key: key, Value: value, Want: want, Source: "combination"}
	}
	switch {
	case c.IMSAuth == "token-file" && c.IMSTokenFile == "":
		return bad("IMS_TOKEN_FILE", "", "IMS_AUTH=token-file needs the path of a token file")
	case c.SPIFFESource == "cli" && c.SpireAgentPath == "":
		return bad("SPIRE_AGENT_PATH", "", "SPIFFE_SOURCE=cli needs the SPIRE agent CLI (CSM: /usr/bin/sbps-marshal-spire-agent)")
	case c.IMSAuth == "spiffe" && c.SpireAgentSock == "":
		return bad("SPIRE_AGENT_SOCK_PATH", "", "IMS_AUTH=spiffe needs the Workload API socket")
	case c.TargetcliMode == "daemon" && c.TargetclidSocket == "":
		return bad("TARGETCLID_SOCKET", "", "TARGETCLI_MODE=daemon needs the targetclid socket")
	case (c.BridgeTLSCert == "") != (c.BridgeTLSKey == ""):
		return bad("BRIDGE_TLS_CERT", c.BridgeTLSCert, "BRIDGE_TLS_CERT and BRIDGE_TLS_KEY go together")
	case (c.NATSTLSCert == "") != (c.NATSTLSKey == ""):
		return bad("NATS_TLS_CERT", c.NATSTLSCert, "NATS_TLS_CERT and NATS_TLS_KEY go together")
	case c.NATSSPIFFE && c.NATSTLSCert != "":
		return bad("NATS_SPIFFE", "true", "NATS_SPIFFE=true and NATS_TLS_CERT/NATS_TLS_KEY are alternatives for the client certificate; set one")
	case c.NATSSPIFFE && c.SpireAgentSock == "":
		return bad("SPIRE_AGENT_SOCK_PATH", "", "NATS_SPIFFE=true needs the Workload API socket")
	case c.NATSSPIFFEServer != "" && !c.NATSSPIFFE:
		return bad("NATS_SPIFFE_SERVER_ID", c.NATSSPIFFEServer, "applies only with NATS_SPIFFE=true")
	case c.NATSSPIFFEServer != "" && c.NATSTLSCA != "":
		return bad("NATS_SPIFFE_SERVER_ID", c.NATSSPIFFEServer, "verifies the server's SVID against the SPIRE trust bundle; NATS_TLS_CA verifies a host-name certificate: set one")
	case c.NATSStream != "" && len(c.NATSURL) == 0:
		return bad("NATS_STREAM", c.NATSStream, "a stream needs NATS_URL")
	case c.NATSS3Subject == c.NATSIMSSubject:
		return bad("NATS_IMS_SUBJECT", c.NATSIMSSubject, "must differ from NATS_S3_SUBJECT")
	case c.LUNRegistry == "nats" && len(c.NATSURL) == 0:
		return bad("LUN_REGISTRY", "nats", "the fleet registry needs NATS_URL (or use local)")
	case c.ResyncInterval < time.Second:
		return bad("RESYNC_INTERVAL", c.ResyncInterval.String(), "want at least 1s")
	}
	if !validIQN(c.TargetIQN) {
		return bad("TARGET_IQN", c.TargetIQN, "want an IQN like iqn.2023-06.csm.iscsi:ncn-w001 (letters, digits, . - : only)")
	}
	return nil
}

// CheckFiles verifies that the files the configuration names exist and can
// be used. It is separate from Load so that `sbps-marshal config` can print a
// configuration whose files are missing.
func (c *Config) CheckFiles() error {
	var errs []error
	need := func(key, path string, dir bool) {
		if path == "" {
			return
		}
		fi, err := os.Stat(path)
		switch {
		case err != nil:
			errs = append(errs, &Error{Key: key, Value: path, Want: "file is not reachable: " + errReason(err), Source: "check"})
		case dir && !fi.IsDir():
			errs = append(errs, &Error{Key: key, Value: path, Want: "want a directory", Source: "check"})
		case !dir && fi.IsDir():
			errs = append(errs, &Error{Key: key, Value: path, Want: "want a file, found a directory", Source: "check"})
		}
	}
	need("SQUASHFS_S3FS_MOUNT", c.Mount, true)
	need("TARGETCLI_BIN", c.TargetcliBin, false)
	need("CA_FILE", c.CAFile, false)
	need("NATS_CREDS", c.NATSCreds, false)
	need("NATS_NKEY_SEED", c.NATSNKeySeed, false)
	need("NATS_TLS_CA", c.NATSTLSCA, false)
	need("NATS_TLS_CERT", c.NATSTLSCert, false)
	need("NATS_TLS_KEY", c.NATSTLSKey, false)
	need("S3_CREDENTIAL_FILE", c.S3CredentialFile, false)
	if c.IMSAuth == "token-file" {
		need("IMS_TOKEN_FILE", c.IMSTokenFile, false)
	}
	if c.TargetcliMode == "daemon" {
		need("TARGETCLID_SOCKET", c.TargetclidSocket, false)
	}
	return errors.Join(errs...)
}

func errReason(err error) string {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// Print writes the effective configuration as KEY=VALUE lines, secrets
// redacted, in a form that can be used as an env file.
func (c *Config) Print(w io.Writer) error {
	for _, k := range keys {
		if _, err := fmt.Fprintf(w, "%s=%s\n", k.env(), quoteEnv(c.shown(k))); err != nil {
			return err
		}
	}
	return nil
}

// PrintJSON writes the effective configuration as one JSON object,
// SBPS_MARSHAL_<KEY> to value, secrets redacted as Print redacts them.
func (c *Config) PrintJSON(w io.Writer) error {
	m := make(map[string]string, len(keys))
	for _, k := range keys {
		m[k.env()] = c.shown(k)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(m)
}

// shown is k's effective value as Print and PrintJSON show it.
func (c *Config) shown(k key) string {
	if k.name == "NATS_URL" {
		return strings.Join(RedactURLs(c.NATSURL), ",") // may carry user:password
	}
	return c.effective[k.name]
}

// envFileError says why the env file could not be read, where its name
// came from, and what to do.
func envFileError(path, origin string, err error) error {
	var pe *os.PathError
	if !errors.As(err, &pe) {
		return err // a line that is not KEY=VALUE: the error names the file and line
	}
	var fix string
	switch {
	case errors.Is(err, os.ErrPermission):
		fix = "the service reads it as root: run the command as root (sudo), or name a readable file with --env-file (\"\" for none)"
	case errors.Is(err, os.ErrNotExist):
		fix = "no such file: check the path, or pass --env-file \"\" to read none"
	default:
		fix = "check that it is a readable file in systemd EnvironmentFile form (KEY=VALUE lines)"
	}
	return &EnvFileError{Path: path, Origin: origin, Err: err, Fix: fix}
}

// EnvFileError says why the env file could not be read, where its name
// came from, and what to do.
type EnvFileError struct {
	Path, Origin string // the file, and what named it
	Err          error
	Fix          string
}

func (e *EnvFileError) Error() string {
	return fmt.Sprintf("configuration: env file %s (from %s): %s: %s", e.Path, e.Origin, errReason(e.Err), e.Fix)
}

func (e *EnvFileError) Unwrap() error { return e.Err }

// ReadEnvFile reads KEY=VALUE lines as systemd's EnvironmentFile does:
// blank lines and lines starting with # or ; are skipped, values may be
// single- or double-quoted, "export " is tolerated.
func ReadEnvFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("configuration: env file: %w", err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("configuration: env file %s line %d: want KEY=VALUE", path, n)
		}
		v = strings.TrimSpace(v)
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		out[strings.TrimSpace(k)] = v
	}
	return out, sc.Err()
}

func quoteEnv(v string) string {
	if v == "" || strings.ContainsAny(v, " \t#;\"'\\") {
		return strconv.Quote(v)
	}
	return v
}

func setBool(dst *bool, v string) error {
	switch v {
	case "true":
		*dst = true
	case "false":
		*dst = false
	default:
		// The old agent treated every value but the exact string "true" as
		// false; refusing other spellings keeps "True" from silently meaning false.
		return errors.New(`want true or false (lower case; the old agent read any other value as false)`)
	}
	return nil
}

// setSeconds reads a whole number of seconds, as the old agent's int() did.
func setSeconds(dst *time.Duration, v string) error {
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return errors.New("want a positive whole number of seconds")
	}
	*dst = time.Duration(n) * time.Second
	return nil
}

func setDur(dst *time.Duration, v string, required bool) error {
	if v == "" {
		if required {
			return errors.New("want a value")
		}
		*dst = 0
		return nil
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n <= 0 {
			return errors.New("want a positive number of seconds")
		}
		*dst = time.Duration(n) * time.Second
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		return errors.New("want a positive whole number of seconds or a duration such as 90s or 5m")
	}
	*dst = d
	return nil
}

func setFraction(dst *float64, v string) error {
	f, err := strconv.ParseFloat(v, 64)
	if err != nil || !(f > 0 && f <= 1) {
		return errors.New("want a number greater than 0 and at most 1")
	}
	*dst = f
	return nil
}

func setURLs(dst *[]string, v string) error {
	*dst = nil
	for u := range strings.SplitSeq(v, ",") {
		u = strings.TrimSpace(u)
		if u == "" {
			continue
		}
		scheme, rest, ok := strings.Cut(u, "://")
		if !ok || rest == "" || !slices.Contains([]string{"nats", "tls", "ws", "wss"}, scheme) {
			return fmt.Errorf("want nats://host:port[,...] (got %q)", u)
		}
		*dst = append(*dst, u)
	}
	return nil
}

// RedactURLs hides the user and password of each URL (NATS_URL).
func RedactURLs(urls []string) []string {
	out := make([]string, len(urls))
	for i, u := range urls {
		scheme, rest, _ := strings.Cut(u, "://")
		if at := strings.LastIndex(rest, "@"); at >= 0 {
			rest = "<redacted>@" + rest[at+1:]
		}
		out[i] = scheme + "://" + rest
	}
	return out
}

func nonEmpty(v string) error {
	if v == "" {
		return errors.New("want a value")
	}
	return nil
}

func checkURL(v string) error {
	if !strings.HasPrefix(v, "https://") && !strings.HasPrefix(v, "http://") {
		return errors.New("want an http(s) URL such as https://api-gw-service-nmn.local")
	}
	return nil
}

func checkHost(v string) error {
	if v == "" || strings.ContainsAny(v, "/ @?#") {
		return errors.New("want host or host:port, without a scheme or path")
	}
	return nil
}

func checkBucket(v string) error {
	if len(v) < 3 || len(v) > 63 {
		return errors.New("want an S3 bucket name of 3 to 63 characters")
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return fmt.Errorf("want an S3 bucket name (a-z 0-9 . -), found %q", r)
		}
	}
	return nil
}

func checkPrefix(v string) error {
	if v == "" || strings.HasPrefix(v, "/") || !strings.HasSuffix(v, "/") || strings.Contains(v, "..") {
		return errors.New(`want a relative key prefix ending in "/" such as PE/`)
	}
	return nil
}

func checkSubject(v string) error {
	if v == "" || strings.ContainsAny(v, " \t\r\n*>") {
		return errors.New("want a NATS subject without spaces or wildcards")
	}
	return nil
}

// checkSPIFFEID accepts empty or a SPIFFE ID; the svid package checks the
// rest of the grammar when it is used.
func checkSPIFFEID(v string) error {
	td, _, _ := strings.Cut(strings.TrimPrefix(v, "spiffe://"), "/")
	if v != "" && (!strings.HasPrefix(v, "spiffe://") || td == "" || strings.ContainsAny(v, " \t?#")) {
		return errors.New("want a SPIFFE ID such as spiffe://shasta/ncn/nats, or empty")
	}
	return nil
}

// checkPlainPath accepts empty or a path of letters, digits and /._+-, so
// that it reaches a command line as one harmless argument.
func checkPlainPath(v string) error {
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._+-", r)) {
			return fmt.Errorf("want a path of letters, digits and /._+- only (found %q)", r)
		}
	}
	return nil
}

// checkAudience accepts a JWT audience that can reach the SPIRE agent
// CLI's command line as one argument.
func checkAudience(v string) error {
	if v == "" || v[0] == '-' {
		return errors.New("want an audience such as system-compute (not empty, not starting with '-')")
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("/._+-:", r)) {
			return fmt.Errorf("want an audience of letters, digits and /._+-: only (found %q)", r)
		}
	}
	return nil
}

func checkGate(v string) error {
	switch {
	case v == "kubectl", v == "none":
		return nil
	case strings.HasPrefix(v, "file:") && filepath.IsAbs(strings.TrimPrefix(v, "file:")):
		return nil
	}
	return errors.New("want kubectl, none, or file:<absolute path>")
}

func validIQN(v string) bool {
	if !strings.HasPrefix(v, "iqn.") || len(v) > 223 {
		return false
	}
	for _, r := range v {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' || r == '-' || r == ':') {
			return false
		}
	}
	return true
}

// modeNames are TARGETCLI_MODE's values: the driver's modes.
func modeNames() []string {
	var names []string
	for _, m := range lio.Modes() {
		names = append(names, string(m))
	}
	return names
}
