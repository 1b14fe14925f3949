package doctor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/events"
	"github.com/sbps-marshal/sbps-marshal/natsauth"
	"github.com/sbps-marshal/sbps-marshal/registry"
)

// checkNATS yields the NATS, NATS stream and LUN registry rows: a
// connection authenticated as the agent's (agent.NewNATSAuth), JetStream,
// the stream NATS_STREAM names and the KV bucket of the fleet registry.
func checkNATS(ctx context.Context, cfg *config.Config, o Options) []Result {
	if len(cfg.NATSURL) == 0 {
		return natsNotConfigured(cfg)
	}
	urls := strings.Join(config.RedactURLs(cfg.NATSURL), ",")
	conn, nc := boundedWith(ctx, o.Timeout, RowNATS, "check that NATS answers at "+urls,
		func(ctx context.Context) (Result, *nats.Conn) {
			nc, r := connectNATS(ctx, cfg, o)
			return r, nc
		})
	if nc == nil || conn.Status == Fail {
		if nc != nil {
			nc.Close()
		}
		return natsUnreachable(cfg, conn)
	}
	defer nc.Close()
	js, jsErr := probeJetStream(ctx, nc, o.Timeout)
	switch {
	case jsErr == nil:
		conn.Detail += "; JetStream enabled"
	case registry.NoJetStream(jsErr):
		conn.Detail += "; no JetStream (" + errText(jsErr) + ")"
	default:
		conn.Detail += "; JetStream does not answer (" + errText(jsErr) + ")"
	}
	stream := bounded(ctx, o.Timeout, RowStream, "JetStream does not answer: check the NATS server",
		func(ctx context.Context) Result { return streamRow(ctx, cfg, js, jsErr) })
	reg := bounded(ctx, o.Timeout, RowRegistry, "JetStream does not answer: check the NATS server",
		func(ctx context.Context) Result { return registryRow(ctx, cfg, js, jsErr) })
	return []Result{conn, stream, reg}
}

// natsNotConfigured are the NATS rows without NATS_URL.
func natsNotConfigured(cfg *config.Config) []Result {
	reg := Result{Name: RowRegistry, Status: OK}
	switch cfg.LUNRegistry {
	case "off":
		reg.Detail = "off (LUN_REGISTRY=off): LIO picks the lowest free LUN index, as the old agent; numbers differ between workers"
	default:
		reg.Detail = "local (LUN_REGISTRY=" + cfg.LUNRegistry + ", no NATS_URL): LUN numbers are stable on this node only, kept in " + cfg.StateDir
	}
	return []Result{
		{Name: RowNATS, Status: OK, Detail: "not configured (NATS_URL is empty): no events; the agent resyncs every " + cfg.ResyncInterval.String()},
		{Name: RowStream, Status: OK, Detail: "not used (no NATS_URL)"},
		reg,
	}
}

// natsUnreachable are the NATS rows when the connection row conn failed.
func natsUnreachable(cfg *config.Config, conn Result) []Result {
	reg := skipped(RowRegistry, RowNATS, "NATS is not reachable")
	if cfg.LUNRegistry == "auto" || cfg.LUNRegistry == "nats" {
		reg.Detail += " (the agent takes numbers from the local registry until it answers, then offers them to the fleet)"
	} else {
		reg = registryNotFleet(cfg)
	}
	stream := skipped(RowStream, RowNATS, "NATS is not reachable")
	if cfg.NATSStream == "" {
		stream = Result{Name: RowStream, Status: OK, Detail: "not configured (NATS_STREAM is empty): plain subscriptions"}
	}
	return []Result{conn, stream, reg}
}

// probeJetStream asks the account's JetStream for its limits: nil when
// JetStream answers.
func probeJetStream(ctx context.Context, nc *nats.Conn, timeout time.Duration) (jetstream.JetStream, error) {
	js, err := jetstream.New(nc)
	if err != nil {
		return js, err
	}
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	_, err = js.AccountInfo(actx)
	return js, err
}

// connectNATS connects as the agent does (credentials, TLS files, the
// X.509-SVID with NATS_SPIFFE=true).
func connectNATS(ctx context.Context, cfg *config.Config, o Options) (*nats.Conn, Result) {
	r := Result{Name: RowNATS}
	urls := strings.Join(config.RedactURLs(cfg.NATSURL), ",")
	auth, err := natsauth.New(ctx, cfg, o.Logger)
	if err == nil {
		defer auth.Close()
		err = auth.Wait(ctx)
	}
	if err != nil {
		r.Status, r.Detail = Fail, "no X.509-SVID for NATS (NATS_SPIFFE=true): "+errText(err)
		r.Fix = "see the SPIFFE row: the SPIRE agent must run and issue this node's SVID (SPIRE_AGENT_PATH, SPIRE_AGENT_SOCK_PATH); or " + setKey(cfg, "NATS_SPIFFE", "false") + " with other NATS credentials"
		return nil, r
	}
	timeout := 5 * time.Second
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	opts, err := auth.Options()
	if err != nil {
		r.Status, r.Detail = Fail, "NATS credentials: "+errText(err)
		r.Fix = "correct the NATS credential and TLS keys the detail names (NATS_CREDS, NATS_NKEY_SEED, NATS_TLS_*) in " + envFile(cfg)
		return nil, r
	}
	nc, err := nats.Connect(strings.Join(cfg.NATSURL, ","), append(opts,
		nats.Name("sbps-marshal doctor "+cfg.NodeName), nats.Timeout(timeout), nats.NoReconnect())...)
	if err != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("cannot connect to NATS at %s: %s", urls, errText(err))
		r.Fix = fmt.Sprintf("check that NATS answers at %s (SBPS_MARSHAL_NATS_URL in %s) and that this node may connect (NATS_CREDS, NATS_NKEY_SEED, NATS_TLS_*, NATS_SPIFFE); without NATS the agent projects on resyncs only", urls, envFile(cfg))
		return nil, r
	}
	r.Status = OK
	r.Detail = fmt.Sprintf("connected to %s (server %s %s)", nc.ConnectedUrlRedacted(), nc.ConnectedServerName(), nc.ConnectedServerVersion())
	if cfg.NATSSPIFFE {
		r.Detail += ", presenting the node's X.509-SVID (NATS_SPIFFE=true)"
	}
	return nc, r
}

// streamRow checks that NATS_STREAM exists and holds the event subjects,
// without creating it (the bridges do).
func streamRow(ctx context.Context, cfg *config.Config, js jetstream.JetStream, jsErr error) Result {
	r := Result{Name: RowStream}
	if cfg.NATSStream == "" {
		r.Status, r.Detail = OK, "not configured (NATS_STREAM is empty): plain subscriptions; events sent while the agent is down are made up by its start-up resync"
		return r
	}
	subjects := []string{cfg.NATSS3Subject, cfg.NATSIMSSubject}
	help := events.StreamHelp(cfg.NATSStream, subjects...) + " (`sbps-marshal bridge` creates it too)"
	if jsErr != nil {
		r.Status, r.Detail = Fail, fmt.Sprintf("NATS_STREAM=%s but JetStream does not answer: %s", cfg.NATSStream, errText(jsErr))
		r.Fix = "enable JetStream on the NATS server (jetstream {} in its configuration), or remove SBPS_MARSHAL_NATS_STREAM from " + envFile(cfg) + " for plain subscriptions"
		return r
	}
	_, err := js.Stream(ctx, cfg.NATSStream)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		r.Status = Fail
		r.Detail = fmt.Sprintf("stream %s (NATS_STREAM) does not exist: no S3 or IMS event reaches the agent, it projects on resyncs only", cfg.NATSStream)
		r.Fix = help
		return r
	}
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, "stream "+cfg.NATSStream+": "+errText(err), "check the NATS server's JetStream"
		return r
	}
	// It exists: EnsureStream only checks its subjects.
	st, err := events.EnsureStream(ctx, js, cfg.NATSStream, subjects)
	if err != nil {
		r.Status, r.Detail = Fail, errText(err)
		r.Fix = "add the subjects to the stream as the detail says (nats stream edit " + cfg.NATSStream + ")"
		return r
	}
	info := st.CachedInfo()
	r.Status = OK
	r.Detail = fmt.Sprintf("stream %s holds %s: %d messages", cfg.NATSStream, strings.Join(info.Config.Subjects, ", "), info.State.Msgs)
	if _, err := js.Consumer(ctx, cfg.NATSStream, "sbps-marshal-"+cfg.NodeName); err == nil {
		r.Detail += "; this node's consumer sbps-marshal-" + cfg.NodeName + " exists"
	}
	return r
}

// registryRow resolves LUN_REGISTRY as the agent does at start and checks
// the fleet registry's KV bucket.
func registryRow(ctx context.Context, cfg *config.Config, js jetstream.JetStream, jsErr error) Result {
	r := Result{Name: RowRegistry}
	if cfg.LUNRegistry == "off" || cfg.LUNRegistry == "local" {
		return registryNotFleet(cfg)
	}
	if jsErr != nil {
		r.Detail = fmt.Sprintf("LUN_REGISTRY=%s but JetStream does not answer: %s", cfg.LUNRegistry, errText(jsErr))
		r.Fix = "enable JetStream on the NATS server for the fleet registry"
		switch {
		case cfg.LUNRegistry == "auto" && registry.NoJetStream(jsErr):
			r.Status = Warn
			r.Detail += "; the agent uses the local registry: LUN numbers are stable on this node only, a rebuilt worker renumbers and its sessions are reset"
			r.Fix += ", or " + setKey(cfg, "LUN_REGISTRY", "local") + " to accept this"
			return r
		case cfg.LUNRegistry == "auto":
			r.Status = Warn
			r.Detail += "; the agent takes numbers from the local registry until it answers, then offers them to the fleet"
			r.Fix = "check the NATS server's JetStream"
			return r
		}
		r.Status = Fail
		return r
	}
	mode := "nats (fleet)"
	if cfg.LUNRegistry == "auto" {
		mode = "nats (fleet; LUN_REGISTRY=auto and JetStream answers)"
	}
	kv, err := js.KeyValue(ctx, cfg.LUNKVBucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		r.Status = Warn
		r.Detail = fmt.Sprintf("%s, but the KV bucket %s (LUN_KV_BUCKET) does not exist: the first agent to project creates it; on a fleet whose agents ran before, their LUN map is not there", mode, cfg.LUNKVBucket)
		r.Fix = "nothing on a new system; otherwise check that SBPS_MARSHAL_LUN_KV_BUCKET in " + envFile(cfg) + " names the bucket the other workers use (nats kv ls)"
		return r
	}
	if err != nil {
		r.Status, r.Detail, r.Fix = Fail, "KV bucket "+cfg.LUNKVBucket+": "+errText(err), "check the NATS server's JetStream"
		return r
	}
	r.Status = OK
	r.Detail = fmt.Sprintf("%s: KV bucket %s", mode, cfg.LUNKVBucket)
	if st, err := kv.Status(ctx); err == nil {
		r.Detail += fmt.Sprintf(" (%d entries)", st.Values())
	}
	return r
}

// registryNotFleet is the registry row for LUN_REGISTRY=local or off.
func registryNotFleet(cfg *config.Config) Result {
	r := Result{Name: RowRegistry, Status: OK}
	if cfg.LUNRegistry == "off" {
		r.Detail = "off (LUN_REGISTRY=off): LIO picks the lowest free LUN index, as the old agent; numbers differ between workers"
	} else {
		r.Detail = "local (LUN_REGISTRY=local): LUN numbers are stable on this node only, kept in " + cfg.StateDir
	}
	return r
}
