package rig

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/sbps-marshal/sbps-marshal/ims/imstest"
	"github.com/sbps-marshal/sbps-marshal/lio"
	"github.com/sbps-marshal/sbps-marshal/lio/sim"
	"github.com/sbps-marshal/sbps-marshal/svid/svidtest"
)

// Stack is the whole system around one agent, on loopback: NATS with
// JetStream, a real S3 server (versitygw) whose posix directory stands in
// for the s3fs mount, an IMS server built to IMS's OpenAPI spec that
// authenticates with JWT-SVIDs, a SPIFFE Workload API, and a simulated
// node's LIO driven by the targetcli simulator.
type Stack struct {
	Dir  string
	NATS *NATS
	S3   *S3
	IMS  *imstest.Server
	// SPIFFE is registered as CSM's SPIRE: the agent's ID only for
	// SpireAgent (svidtest.CSMEntry).
	SPIFFE *svidtest.Server
	// SpireAgent is the spire-agent CLI stand-in's hard link
	// sbps-marshal-spire-agent (SPIRE_AGENT_PATH in AgentEnv).
	SpireAgent string
	Node       *sim.Node
	// Targetcli is the simulator binary, named targetcli.
	Targetcli string
	// NodeName is the simulated worker's name (NODE_NAME).
	NodeName string

	credFile  string
	xnameFile string
	stateDir  string
}

// StackOptions configure StartStack.
type StackOptions struct {
	Dir       string // required: everything the stack writes goes here
	NodeName  string // default "ncn-w001"
	Targetcli string // simulator binary; default: built from this source tree
	NoNATS    bool   // run without an event bus
}

// Audience is the JWT audience the IMS server requires (SPIRE_JWT_AUDIENCE's default).
const Audience = "system-compute"

// StartStack starts every component. On error, what was started is stopped.
func StartStack(ctx context.Context, o StackOptions) (_ *Stack, err error) {
	if o.Dir == "" {
		return nil, errors.New("rig: StackOptions.Dir is required")
	}
	if o.NodeName == "" {
		o.NodeName = "ncn-w001"
	}
	s := &Stack{Dir: o.Dir, NodeName: o.NodeName}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	if !o.NoNATS {
		if s.NATS, err = StartNATS(filepath.Join(o.Dir, "nats")); err != nil {
			return nil, err
		}
	}
	s3opts := S3Options{Dir: filepath.Join(o.Dir, "s3")}
	if s.NATS != nil {
		s3opts.NATSURL = s.NATS.ClientURL()
	}
	if s.S3, err = StartS3(ctx, s3opts); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "spire"), 0o700); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(o.Dir, "bin"), 0o755); err != nil {
		return nil, err
	}
	if s.SpireAgent, err = svidtest.BuildCLI(filepath.Join(o.Dir, "bin")); err != nil {
		return nil, fmt.Errorf("rig: %w", err)
	}
	if s.SPIFFE, err = svidtest.Start(filepath.Join(o.Dir, "spire"), svidtest.Options{Entries: []svidtest.Entry{CSMEntry(s.SpireAgent)}}); err != nil {
		return nil, fmt.Errorf("rig: SPIFFE Workload API: %w", err)
	}
	if s.IMS, err = imstest.Start(imstest.Options{Verify: s.SPIFFE.Verifier(Audience)}, imstest.ListenOptions{}); err != nil {
		return nil, err
	}
	if s.Node, err = sim.NewNode(filepath.Join(o.Dir, "lio"), sim.NodeOptions{Hostname: o.NodeName}); err != nil {
		return nil, fmt.Errorf("rig: simulated LIO node: %w", err)
	}
	s.Targetcli = o.Targetcli
	if s.Targetcli == "" {
		if s.Targetcli, err = sim.Build(filepath.Join(o.Dir, "bin")); err != nil {
			return nil, err
		}
	}
	s.credFile = filepath.Join(o.Dir, "s3.cred")
	c := s.S3.Credentials()
	if err := os.WriteFile(s.credFile, []byte(c.AccessKeyID+":"+c.SecretAccessKey+"\n"), 0o600); err != nil {
		return nil, err
	}
	s.xnameFile = filepath.Join(o.Dir, "xname")
	if err := os.WriteFile(s.xnameFile, []byte("x3000c0s1b0n0\n"), 0o644); err != nil {
		return nil, err
	}
	s.stateDir = filepath.Join(o.Dir, "state")
	return s, nil
}

// CSMEntry is CSM's SPIRE registration of the agent for the CLI at path
// (uid 0, gid 0, unix:path); where the tests do not run as root, the
// same with their own uid and gid.
func CSMEntry(path string) svidtest.Entry {
	if os.Getuid() != 0 || os.Getgid() != 0 {
		return svidtest.PathEntry(svidtest.DefaultID, path)
	}
	return svidtest.CSMEntry(path)
}

// Close stops everything the stack started.
func (s *Stack) Close() {
	if s.IMS != nil {
		s.IMS.Close()
	}
	if s.SPIFFE != nil {
		s.SPIFFE.Close()
	}
	if s.S3 != nil {
		s.S3.Stop()
	}
	if s.NATS != nil {
		s.NATS.Shutdown()
	}
}

// Mount is the directory that plays the s3fs mount of the bucket.
func (s *Stack) Mount() string { return s.S3.MountDir() }

// AgentEnv is the environment that points an sbps-marshal agent at the
// stack: SBPS_MARSHAL_* keys plus the simulator's own variables.
func (s *Stack) AgentEnv() []string {
	host := strings.TrimPrefix(s.S3.Endpoint(), "http://")
	env := []string{
		"SBPS_MARSHAL_S3_HOST=" + host,
		"SBPS_MARSHAL_S3_PROTO=http",
		"SBPS_MARSHAL_S3_CREDENTIAL_FILE=" + s.credFile,
		"SBPS_MARSHAL_S3_BUCKET=" + s.S3.Bucket(),
		"SBPS_MARSHAL_SQUASHFS_S3FS_MOUNT=" + s.Mount(),
		"SBPS_MARSHAL_API_GATEWAY=" + s.IMS.URL(),
		"SBPS_MARSHAL_IMS_URI=apis/ims/v3/images",
		"SBPS_MARSHAL_IMS_AUTH=spiffe",
		"SBPS_MARSHAL_SPIRE_AGENT_SOCK_PATH=" + s.SPIFFE.SocketPath(),
		"SBPS_MARSHAL_SPIRE_AGENT_PATH=" + s.SpireAgent,
		"SBPS_MARSHAL_XNAME_FILE=" + s.xnameFile,
		"SBPS_MARSHAL_LIO_SAVE_FILE=" + s.Node.SaveFile(),
		"SBPS_MARSHAL_TARGETCLI_BIN=" + s.Targetcli,
		"SBPS_MARSHAL_TARGETCLID_SOCKET=" + s.Node.SocketPath(),
		"SBPS_MARSHAL_TARGET_IQN=" + s.Node.IQN(),
		"SBPS_MARSHAL_NODE_NAME=" + s.NodeName,
		"SBPS_MARSHAL_STATE_DIR=" + s.stateDir,
		"SBPS_MARSHAL_GATE=none",
		"SBPS_MARSHAL_METRICS_ADDR=",
	}
	if s.NATS != nil {
		env = append(env, "SBPS_MARSHAL_NATS_URL="+s.NATS.ClientURL())
	}
	return append(env, s.Node.Env()...)
}

// Saved reads the node's saveconfig.json, retrying for up to 2 s while it
// is caught half-written (the simulator rewrites it in place, as rtslib
// 2.1.75 does, while the agent under test applies changes).
func (s *Stack) Saved() (*lio.Config, error) {
	deadline := time.Now().Add(2 * time.Second)
	for {
		c, err := lio.Load(s.Node.SaveFile())
		if !errors.Is(err, lio.ErrIncomplete) || time.Now().After(deadline) {
			return c, err
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// PutPE uploads a programming-environment image under PE/ and returns its key.
func (s *Stack) PutPE(ctx context.Context, name string, data []byte) (string, error) {
	key := "PE/" + name
	_, err := s.S3.Put(ctx, key, data)
	return key, err
}

// Image describes an IMS image the stack registered.
type Image struct {
	ID, Name    string
	RootfsKey   string
	RootfsETag  string
	ManifestKey string
}

// AddImage uploads a rootfs and its manifest.json to S3 the way IMS does,
// and registers the image in IMS, tagged for projection or not.
func (s *Stack) AddImage(ctx context.Context, name string, rootfs []byte, tagged bool) (Image, error) {
	img := Image{ID: imstest.NewID(), Name: name}
	img.RootfsKey = img.ID + "/rootfs"
	etag, err := s.S3.Put(ctx, img.RootfsKey, rootfs)
	if err != nil {
		return img, err
	}
	img.RootfsETag = strings.Trim(etag, `"`)
	if err := s.putManifest(ctx, &img); err != nil {
		return img, err
	}
	var meta map[string]string
	if tagged {
		meta = map[string]string{"sbps-project": "true"}
	} else {
		meta = map[string]string{}
	}
	s.IMS.Put(imstest.Image{ID: img.ID, Name: name, Metadata: meta,
		Link: &imstest.Link{Type: "s3", Path: "s3://" + s.S3.Bucket() + "/" + img.ManifestKey}})
	return img, nil
}

// ReplaceRootfs uploads new rootfs content for an image and rewrites its
// manifest, as a rebuild that keeps the IMS id would.
func (s *Stack) ReplaceRootfs(ctx context.Context, img *Image, rootfs []byte) error {
	etag, err := s.S3.Put(ctx, img.RootfsKey, rootfs)
	if err != nil {
		return err
	}
	img.RootfsETag = strings.Trim(etag, `"`)
	return s.putManifest(ctx, img)
}

func (s *Stack) putManifest(ctx context.Context, img *Image) error {
	img.ManifestKey = img.ID + "/manifest.json"
	manifest := fmt.Sprintf(`{"version":"1.0","created":"%s","artifacts":[{"type":"application/vnd.cray.image.rootfs.squashfs","md5":"","link":{"type":"s3","path":"s3://%s/%s","etag":"%s"}}]}`,
		time.Now().UTC().Format("2006-01-02 15:04:05"), s.S3.Bucket(), img.RootfsKey, img.RootfsETag)
	_, err := s.S3.Put(ctx, img.ManifestKey, []byte(manifest))
	return err
}

// ImageBytes returns content for a boot image of about size bytes: a real
// squashfs made with mksquashfs when squashfs-tools is installed, random
// bytes otherwise. Either way each call returns different content.
func ImageBytes(dir string, size int) ([]byte, error) {
	payload := make([]byte, size)
	rand.Read(payload)
	if _, err := exec.LookPath("mksquashfs"); err != nil {
		return payload, nil
	}
	src, err := os.MkdirTemp(dir, "squashfs-src-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(src)
	if err := os.WriteFile(filepath.Join(src, "payload"), payload, 0o644); err != nil {
		return nil, err
	}
	out := src + ".squashfs"
	defer os.Remove(out)
	cmd := exec.Command("mksquashfs", src, out, "-noappend", "-quiet", "-no-progress", "-noI", "-noD", "-noF")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("mksquashfs: %w: %s", err, b)
	}
	return os.ReadFile(out)
}
