package svidtest

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/sbps-marshal/sbps-marshal/internal/gobuild"
)

// CLIName is the name CSM gives the hard link of spire-agent that its
// SPIRE registration entry names (/usr/bin/sbps-marshal-spire-agent).
const CLIName = "sbps-marshal-spire-agent"

// defaultCLISocket is the real CLI's default -socketPath.
const defaultCLISocket = "/tmp/spire-agent/public/api.sock"

// RunCLI is the SPIRE agent command line stand-in:
//
//	api fetch jwt -audience <aud> [-spiffeID <id>] [-socketPath <sock>] [-output json] [-timeout 5s]
//	api fetch x509 [-socketPath <sock>] [-write <dir>] [-silent] [-output json] [-timeout 5s]
//
// It calls the Workload API at the socket itself (so the SPIRE agent, or
// Server, attests this process), and prints what the real CLI prints: with
// -output json, jwt prints the JSON array [JWTSVIDResponse,
// JWTBundlesResponse] (protobuf field names: svids[].spiffe_id, svid;
// bundles); x509 -write writes svid.0.pem, svid.0.key and bundle.0.pem
// into dir. Errors go to stderr (the gRPC status, such as "rpc error: code
// = PermissionDenied desc = no identity issued") with exit status 1.
func RunCLI(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if err := runCLI(ctx, args, stdout); err != nil {
		fmt.Fprintln(stderr, err)
		return 1
	}
	return 0
}

func runCLI(ctx context.Context, args []string, stdout io.Writer) error {
	if len(args) < 3 || args[0] != "api" || args[1] != "fetch" {
		return fmt.Errorf("usage: spire-agent api fetch jwt|x509 [flags] (stand-in; got %q)", args)
	}
	fs := flag.NewFlagSet("api fetch "+args[2], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	socket := fs.String("socketPath", defaultCLISocket, "Path to the SPIRE Agent API Unix domain socket")
	output := fs.String("output", "pretty", "Desired output format (pretty, json)")
	timeout := fs.Duration("timeout", 5*time.Second, "Time to wait for a response")
	var audience, spiffeID, write *string
	var silent *bool
	switch args[2] {
	case "jwt":
		audience = fs.String("audience", "", "comma separated list of audience values")
		spiffeID = fs.String("spiffeID", "", "SPIFFE ID subject (optional)")
	case "x509":
		write = fs.String("write", "", "Write SVID data to the specified path (optional)")
		silent = fs.Bool("silent", false, "Suppress stdout")
	default:
		return fmt.Errorf("unknown command %q: want jwt or x509", args[2])
	}
	if err := fs.Parse(args[3:]); err != nil {
		return err
	}
	if *output != "json" && *output != "pretty" {
		return fmt.Errorf("invalid output format %q", *output)
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	conn, err := grpc.NewClient("unix://"+*socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer conn.Close()
	client := workload.NewSpiffeWorkloadAPIClient(conn)
	ctx = metadata.AppendToOutgoingContext(ctx, "workload.spiffe.io", "true")
	if args[2] == "jwt" {
		return fetchJWT(ctx, client, *audience, *spiffeID, *output, stdout)
	}
	return fetchX509(ctx, client, *write, *silent, *output, stdout)
}

func fetchJWT(ctx context.Context, c workload.SpiffeWorkloadAPIClient, audience, id, output string, stdout io.Writer) error {
	if audience == "" {
		return errors.New("audience must be specified")
	}
	svids, err := c.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{audience}, SpiffeId: id})
	if err != nil {
		return err
	}
	stream, err := c.FetchJWTBundles(ctx, &workload.JWTBundlesRequest{})
	if err != nil {
		return err
	}
	bundles, err := stream.Recv()
	if err != nil {
		return err
	}
	if output == "json" {
		return printJSON(stdout, svids, bundles)
	}
	for _, sv := range svids.Svids {
		fmt.Fprintf(stdout, "token(%s):\n\t%s\n\n", sv.SpiffeId, sv.Svid)
	}
	for td, b := range bundles.Bundles {
		fmt.Fprintf(stdout, "bundle(%s):\n\t%s\n\n", td, b)
	}
	return nil
}

func fetchX509(ctx context.Context, c workload.SpiffeWorkloadAPIClient, dir string, silent bool, output string, stdout io.Writer) error {
	stream, err := c.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		return err
	}
	resp, err := stream.Recv()
	if err != nil {
		return err
	}
	if dir != "" {
		for i, sv := range resp.Svids {
			if err := writeSVID(dir, i, sv); err != nil {
				return err
			}
		}
	}
	switch {
	case silent:
		return nil
	case output == "json":
		return printJSON(stdout, resp)
	}
	for _, sv := range resp.Svids {
		fmt.Fprintf(stdout, "SPIFFE ID:\t\t%s\n", sv.SpiffeId)
	}
	return nil
}

// writeSVID writes as the real CLI does: svid.<i>.pem (the chain),
// svid.<i>.key (PKCS #8, mode 0600) and bundle.<i>.pem.
func writeSVID(dir string, i int, sv *workload.X509SVID) error {
	certs, err := x509.ParseCertificates(sv.X509Svid)
	if err != nil {
		return fmt.Errorf("parse X.509-SVID: %w", err)
	}
	bundle, err := x509.ParseCertificates(sv.Bundle)
	if err != nil {
		return fmt.Errorf("parse bundle: %w", err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{fmt.Sprintf("svid.%d.pem", i), certsPEM(certs), 0o644},
		{fmt.Sprintf("svid.%d.key", i), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: sv.X509SvidKey}), 0o600},
		{fmt.Sprintf("bundle.%d.pem", i), certsPEM(bundle), 0o644},
	}
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return fmt.Errorf("error writing SVID data: %w", err)
		}
	}
	return nil
}

func certsPEM(certs []*x509.Certificate) []byte {
	var b bytes.Buffer
	for _, c := range certs {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	return b.Bytes()
}

// printJSON prints messages as the real CLI's JSON printer: one array,
// protobuf field names.
func printJSON(w io.Writer, msgs ...proto.Message) error {
	raw := make([]json.RawMessage, 0, len(msgs))
	for _, m := range msgs {
		b, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(m)
		if err != nil {
			return err
		}
		raw = append(raw, b)
	}
	out, err := json.Marshal(raw)
	if err != nil {
		return err
	}
	var ind bytes.Buffer
	if err := json.Indent(&ind, out, "", "  "); err != nil {
		return err
	}
	ind.WriteByte('\n')
	_, err = w.Write(ind.Bytes())
	return err
}

// BuildCLI compiles the stand-in into dir/spire-agent and hard-links
// dir/sbps-marshal-spire-agent to it, as CSM installs the agent's copy.
// It returns the hard link's path, the one CSMEntry registers.
func BuildCLI(dir string) (string, error) {
	bin := filepath.Join(dir, "spire-agent")
	if err := gobuild.Build(bin, "./svid/svidtest/spire-agent"); err != nil {
		return "", fmt.Errorf("build spire-agent stand-in: %w", err)
	}
	link := filepath.Join(dir, CLIName)
	os.Remove(link)
	if err := os.Link(bin, link); err != nil {
		return "", fmt.Errorf("hard-link %s to the spire-agent stand-in: %w", link, err)
	}
	return link, nil
}

var buildCLIOnce = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "spire-agent-")
	if err != nil {
		return "", err
	}
	return BuildCLI(dir)
})

// CLIBinary returns the hard link sbps-marshal-spire-agent of the
// stand-in built once for this test process (spire-agent beside it). It
// fails the test when the build fails.
func CLIBinary(tb testing.TB) string {
	tb.Helper()
	link, err := buildCLIOnce()
	if err != nil {
		tb.Fatalf("spire-agent stand-in: %v", err)
	}
	return link
}
