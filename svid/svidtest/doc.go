// Package svidtest is a SPIFFE Workload API server for tests and the demo: it
// stands in for the SPIRE agent that cannot be installed on development
// machines.
//
// It serves the generated gRPC SpiffeWorkloadAPI (FetchJWTSVID,
// FetchJWTBundles, ValidateJWTSVID, FetchX509SVID, FetchX509Bundles) over a
// unix socket, so go-spiffe's workloadapi client talks to it unchanged. Like
// SPIRE, it rejects calls that lack the "workload.spiffe.io: true" metadata
// header. The credentials are real: JWT-SVIDs are ES256-signed with a key
// made at Start (header kid, claims sub, aud, iat, exp), X.509-SVIDs are
// issued by an in-memory CA for the trust domain (default "shasta"). The
// workload's X.509-SVID is issued at Start; RotateX509 replaces it and sends
// the new one on every open FetchX509SVID stream, as SPIRE rotates SVIDs.
// IssueX509 and CertPool equip the other party of a TLS test (a NATS server
// that requires the workload's SVID as its client certificate).
//
// It attests callers as SPIRE's unix workload attestor does: from the
// peer credentials of the unix socket connection (SO_PEERCRED: uid, gid,
// pid) and the binary the pid runs (/proc/<pid>/exe) it forms the
// selectors unix:uid:<n>, unix:gid:<n>, unix:path:<binary>, and issues the
// SPIFFE IDs of the registration entries (Entry) those satisfy. A caller
// that satisfies none gets PermissionDenied "no identity issued" from every
// fetch, as from SPIRE. By default the only entry is for the process that
// starts the server (ProcessEntry); CSMEntry is CSM's registration of the
// agent, for the hard link of spire-agent. RunCLI and the command in
// ./spire-agent (BuildCLI, CLIBinary) stand in for the SPIRE agent's
// command line, `spire-agent api fetch jwt|x509`.
//
// A Server's keys and CA live as long as the Server, so Stop and Restart
// (which simulate the SPIRE agent restarting) keep tokens issued before the
// restart valid, just as a SPIRE agent restart does.
//
// Concurrency: every method of Server is safe for concurrent use, including
// while RPCs are being served. Stop, Restart and Close may be called in any
// order and more than once.
package svidtest
