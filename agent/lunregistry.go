package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/sbps-marshal/sbps-marshal/config"
	"github.com/sbps-marshal/sbps-marshal/metrics"
	"github.com/sbps-marshal/sbps-marshal/natsauth"
	"github.com/sbps-marshal/sbps-marshal/projector"
	"github.com/sbps-marshal/sbps-marshal/registry"
)

// RegistryProbeTimeout is how long LUN_REGISTRY=auto waits at start for
// JetStream to answer before it decides.
const RegistryProbeTimeout = 5 * time.Second

// RegistryChoice is the LUN registry the agent uses, after LUN_REGISTRY=auto
// is resolved, and why.
type RegistryChoice struct {
	Mode string // nats, local or off
	Why  string
}

// Fleet reports whether LUN numbers come from the fleet registry.
func (c RegistryChoice) Fleet() bool { return c.Mode == "nats" }

// RegistryChoice is the LUN registry this agent uses and why.
func (a *Agent) RegistryChoice() RegistryChoice { return a.regChoice }

// lunRegistry builds the LUN registry LUN_REGISTRY names. auto is nats when
// NATS_URL is set and JetStream answers, local otherwise (with a warning
// when NATS is configured: a rebuilt worker then cannot get its map back).
// A NATS server that cannot be reached at all within RegistryProbeTimeout
// is taken as an outage, not as "no JetStream": the fleet registry is used
// through its local fallback, so that the numbers handed out meanwhile are
// offered back to the fleet once it answers.
func lunRegistry(ctx context.Context, cfg *config.Config, log *slog.Logger, m *metrics.Metrics, auth *natsauth.Auth) (projector.LUNRegistry, *registry.Fallback, func(), RegistryChoice, error) {
	nothing := func() {}
	choice := RegistryChoice{Mode: cfg.LUNRegistry, Why: "LUN_REGISTRY=" + cfg.LUNRegistry}
	if cfg.LUNRegistry == "auto" && len(cfg.NATSURL) == 0 {
		choice = RegistryChoice{Mode: "local", Why: "LUN_REGISTRY=auto and no NATS_URL"}
	}
	if choice.Mode == "off" {
		log.Info("LUN registry", "mode", choice.Mode, "why", choice.Why)
		m.SetLUNRegistry(choice.Mode)
		return nil, nil, nothing, choice, nil
	}
	local, err := registry.NewLocal(registry.LocalConfig{Dir: cfg.StateDir, Quarantine: cfg.LUNQuarantine, Node: cfg.NodeName})
	if err != nil {
		return nil, nil, nothing, choice, fmt.Errorf("LUN registry in STATE_DIR: %w", err)
	}
	if choice.Mode == "local" {
		log.Info("LUN registry", "mode", choice.Mode, "why", choice.Why)
		m.SetLUNRegistry(choice.Mode)
		return local, nil, nothing, choice, nil
	}
	opts, err := auth.Options()
	if err != nil {
		return nil, nil, nothing, choice, fmt.Errorf("LUN registry: %w", err)
	}
	nc, js, err := connectRegistry(cfg, opts)
	if err != nil {
		if choice.Mode == "auto" {
			return autoLocal(log, m, local, err)
		}
		return nil, nil, nothing, choice, fmt.Errorf("LUN registry: %w", err)
	}
	if choice.Mode == "auto" {
		var answered bool
		if choice, answered = probeJetStream(ctx, cfg, log, js, nc); !answered {
			nc.Close()
			return autoLocal(log, m, local, errors.New(choice.Why))
		}
	}
	log.Info("LUN registry", "mode", choice.Mode, "why", choice.Why, "bucket", cfg.LUNKVBucket)
	m.SetLUNRegistry(choice.Mode)
	fb := fleetRegistry(cfg, log, m, js, local)
	return fb, fb, nc.Close, choice, nil
}

// connectRegistry connects the registry's own NATS connection, which
// retries in the background when no server answers yet.
func connectRegistry(cfg *config.Config, opts []nats.Option) (*nats.Conn, jetstream.JetStream, error) {
	nc, err := nats.Connect(strings.Join(cfg.NATSURL, ","), append(opts,
		nats.Name("sbps-marshal registry "+cfg.NodeName), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))...)
	if err != nil {
		return nil, nil, fmt.Errorf("NATS: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("JetStream: %w", err)
	}
	return nc, js, nil
}

// probeJetStream resolves LUN_REGISTRY=auto with NATS configured: nats when
// JetStream answers, or does not answer within RegistryProbeTimeout (an
// outage: the fallback serves meanwhile); answered=false when the server
// says it has no JetStream, with the answer in the choice's Why.
func probeJetStream(ctx context.Context, cfg *config.Config, log *slog.Logger, js jetstream.JetStream, nc *nats.Conn) (choice RegistryChoice, answered bool) {
	pctx, cancel := context.WithTimeout(ctx, RegistryProbeTimeout)
	_, err := js.AccountInfo(pctx)
	cancel()
	switch {
	case err == nil:
		return RegistryChoice{Mode: "nats", Why: "LUN_REGISTRY=auto and JetStream answers at " + nc.ConnectedUrlRedacted()}, true
	case registry.NoJetStream(err):
		return RegistryChoice{Why: err.Error()}, false
	}
	log.Warn("fleet LUN registry not reachable at start; numbers come from the local registry until it answers, then are offered to it",
		"nats_url", strings.Join(cfg.NATSURL, ","), "err", err)
	return RegistryChoice{Mode: "nats", Why: fmt.Sprintf("LUN_REGISTRY=auto and NATS_URL set; JetStream did not answer within %s (%v), so the local registry serves until it does", RegistryProbeTimeout, err)}, true
}

// fleetRegistry is the KV registry with the local one as its fallback
// when it does not answer within LUN_REGISTRY_WAIT.
func fleetRegistry(cfg *config.Config, log *slog.Logger, m *metrics.Metrics, js jetstream.JetStream, local *registry.Local) *registry.Fallback {
	kv := registry.NewKV(js, registry.KVConfig{Bucket: cfg.LUNKVBucket, Quarantine: cfg.LUNQuarantine, Node: cfg.NodeName})
	return registry.NewFallback(kv, local, registry.FallbackConfig{Timeout: cfg.LUNRegistryWait, OnLocal: func(op, name string, err error) {
		log.Warn("fleet LUN registry did not answer in time; used the local registry (reconciled when it is back)",
			"op", op, "backstore", name, "timeout", cfg.LUNRegistryWait, "err", err)
		m.RegistryFallback()
	}})
}

// autoLocal is LUN_REGISTRY=auto's answer when NATS is configured but has
// no JetStream: the local registry, with a warning saying what it costs.
func autoLocal(log *slog.Logger, m *metrics.Metrics, local *registry.Local, why error) (projector.LUNRegistry, *registry.Fallback, func(), RegistryChoice, error) {
	choice := RegistryChoice{Mode: "local", Why: "LUN_REGISTRY=auto, NATS_URL set but no JetStream: " + why.Error()}
	log.Warn("LUN_REGISTRY=auto: NATS has no JetStream, so LUN numbers are kept per node only; a rebuilt worker renumbers and its sessions are reset. Enable JetStream on NATS for the fleet registry, or set LUN_REGISTRY=local to accept this",
		"why", why)
	m.SetLUNRegistry(choice.Mode)
	return local, nil, func() {}, choice, nil
}
