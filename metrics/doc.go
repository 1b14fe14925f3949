// Package metrics provides sbps-marshal's Prometheus metrics and its
// /metrics, /healthz and /readyz endpoints.
//
// New builds a Metrics on a registry of its own (never the default one), so
// tests and several agents in one process do not share state. The agent feeds
// it at fixed moments:
//
//   - after every reconcile pass: ObservePass(kind, report, err, status);
//   - after the events of a batch are Done: ObserveEvents(batch, err), or
//     IgnoreEvents(batch) for a batch dropped without a pass;
//   - once at start: CollectEventStats(src.Stats) per event source,
//     CollectLIOStats(driver.Stats), CollectNATSConnected(...) when NATS is
//     configured, CollectReady(ready), SetResyncInterval(RESYNC_INTERVAL);
//     and InstrumentApplier around the reconciler's lio.Applier;
//   - after every answer of the node gate: SetGate(open, err);
//   - Handler(ready) served with Serve(ctx, METRICS_ADDR, h).
//
// Cumulative counters kept by other packages (event sources, the targetcli
// driver) are read at scrape time and exposed as counters; nothing here
// keeps deltas. All methods are safe for concurrent use.
//
// # Metrics
//
// Reconcile:
//
//   - sbps_marshal_projections{kind,state} (gauge): entries of the latest
//     status view; kind pe|rootfs (none for foreign backstores), state
//     projected|missing|pending|rejected|held|stale|foreign. Absent until the
//     first SetStatus; a state that vanished reads 0.
//   - sbps_marshal_image_problems{state,reason} (gauge): pending and rejected
//     images of the latest status view by their code
//     (projector.ProblemCodes): s3fs_lag, read_only_mount, not_in_s3,
//     no_etag, etag_mismatch, empty, bad_key, unsafe_file, bad_manifest,
//     no_link, other_bucket, bad_record, other.
//   - sbps_marshal_lun_registry_mismatches (gauge): LUNs of the latest status
//     view whose index differs from the LUN registry's; they are moved only
//     by `sbps-marshal sync --renumber`.
//   - sbps_marshal_passes_total{kind,outcome} (counter): passes by kind
//     (full, keys, repair) and outcome (success, error), including those that
//     failed before producing a report. Every kind and outcome exists at 0
//     from the start.
//   - sbps_marshal_consecutive_failed_passes (gauge): passes failed in a
//     row, any kind; 0 after a pass that did not fail (a closed node gate is
//     no failure, a shutdown changes nothing).
//   - sbps_marshal_pass_duration_seconds{kind,outcome} (histogram): duration
//     of passes that produced a report (inventory, plan, apply).
//   - sbps_marshal_apply_duration_seconds{outcome} (histogram): duration of
//     one Apply call to LIO (InstrumentApplier); outcome error when the call
//     failed or one of its ops did not reach its state.
//   - sbps_marshal_lio_operations_total{op,outcome} (counter): LIO operations
//     by op (create-backstore, delete-backstore, create-lun, delete-lun,
//     enable-tpg, disable-tpg) and outcome (applied, already_done, failed,
//     not_attempted).
//   - sbps_marshal_last_full_resync_timestamp_seconds (gauge): Unix time of
//     the end of the latest successful full pass; 0 before it.
//   - sbps_marshal_inventory_errors_total{source} (counter): errors reading
//     the inventory by source: s3 (bucket listing), ims (IMS listing or
//     records), manifest (manifest.json fetch), lio (saveconfig.json read or
//     apply).
//   - sbps_marshal_mass_delete_refusals_total (counter): passes whose
//     deletes the mass-delete guard held back (a held delete with code
//     projector.HeldMassDelete; one per pass).
//   - sbps_marshal_held_deletes{reason} (gauge): projections the latest
//     pass with a plan would remove (or recreate) but kept, by the held
//     change's code (projector.HeldCodes): mass_delete (needs
//     `sbps-marshal sync --allow-mass-delete`), ims_incomplete, unconfirmed
//     (left out of the IMS listing, not confirmed gone yet), pending,
//     refused; other for a change without a code. All exist at 0 from the
//     start.
//   - sbps_marshal_resync_interval_seconds (gauge): RESYNC_INTERVAL
//     (SetResyncInterval); the resync-stale alert multiplies it.
//   - sbps_marshal_gate{state} (gauge): 1 for the node gate's latest answer
//     (SetGate): open, closed, or unknown (not asked yet, or no answer);
//     unknown from the start.
//   - sbps_marshal_registry_fallbacks_total (counter): times the LUN registry
//     could not be used and LIO chose the LUN index.
//
// targetcli (read from lio.Driver.Stats at scrape time):
//
//   - sbps_marshal_targetcli_processes_total (counter): targetcli processes
//     started. Failures are sbps_marshal_lio_operations_total{outcome="failed"}.
//   - sbps_marshal_targetclid_requests_total (counter): targetclid requests.
//
// Events:
//
//   - sbps_marshal_events_total{source,outcome} (counter): events the agent
//     took, by source (s3, ims, saveconfig, resync) and outcome (applied,
//     failed, ignored); the sum over outcome is the events received.
//   - sbps_marshal_event_apply_latency_seconds (histogram): from an event's
//     receipt (Event.Received) to the end of the pass that applied it.
//   - sbps_marshal_event_source_outcomes_total{source,outcome} (counter): the
//     event sources' own counters (events.Stat), read at scrape time: source
//     s3, ims, resync, nats, jetstream, saveconfig; outcome event,
//     undecodable, other_bucket, reconnect, ack, nak, ... (events.Outcome*).
//   - sbps_marshal_nats_connected (gauge): 1 while connected to NATS, 0 not;
//     absent when NATS is not configured.
//   - sbps_marshal_ready (gauge): 1 when projections are current (what
//     /readyz answers 200 for), 0 otherwise, and 0 until CollectReady.
//
// Process:
//
//   - sbps_marshal_build_info{version,commit,goversion} (gauge): always 1.
//   - go_* and process_* from the standard collectors (unless
//     WithoutRuntimeCollectors), promhttp_metric_handler_* from /metrics.
//
// Every series an alert of deploy/monitoring reads exists from New on, at
// 0 or its starting state (sbps_marshal_nats_connected only when NATS is
// configured), so that an alert tells "no failure" from "no data".
//
// No label carries an image id, key or backstore name: those are in
// `sbps-marshal status` and the logs.
package metrics
