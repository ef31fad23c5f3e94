//! The node result cache, where every ready task passes: after its inputs are attached and
//! before it is published. A cacheable task gets its key (`shared::cache::key`) with the
//! fingerprint the live workers of its module report; if an entry with that key exists and
//! its artifacts are still in the store, the task is not published: its result is, as if a
//! worker named [`cache::WORKER`] had sent it, so the result consumer applies it exactly like
//! any other success (exactly once, successors released, runs finished).
//!
//! No key is computed while the module's live workers disagree on their fingerprint (an
//! upgrade rolling through the fleet) or none is live: an entry stored under one build must
//! never answer for another. Entries are written by the result consumer when a worker
//! reports the key back, which it does only if it ran the task with that very fingerprint.

use super::Ready;
use crate::db::{sql, DbError};
use deadpool_postgres::GenericClient;
use renderfleet_shared::artifact::{refs_in, store_path};
use renderfleet_shared::cache;
use renderfleet_shared::metrics as m;
use renderfleet_shared::registry::registry;
use renderfleet_shared::wire::{CacheEnd, CacheHint, Finished, Outcome};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;
use uuid::Uuid;

/// What the publisher needs to serve from the cache.
#[derive(Debug, Clone)]
pub struct Cache {
    /// The artifact store's root, where a hit's artifacts must still be.
    pub store: PathBuf,
    /// A worker heartbeating within this long is live (the recovery heartbeat timeout).
    pub live_for: Duration,
    /// Whether a missing store was logged (once per broker session).
    pub warned: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A task answered from the cache: its outbox row and the result to publish instead.
pub struct Hit {
    pub outbox_id: i64,
    pub finished: Finished,
}

/// Splits `ready` into the tasks to publish (cacheable ones carrying their key, so their
/// worker can report it back) and the hits. Tasks of modules that are not cacheable cost
/// nothing here, so the no-op hops the benchmark measures never query.
pub async fn lookup(client: &impl GenericClient, cache: &Cache, ready: Vec<Ready>) -> Result<(Vec<Ready>, Vec<Hit>), DbError> {
    if !ready.iter().any(|r| registry().cache_type(&r.task.module_key).is_some()) {
        return Ok((ready, Vec::new()));
    }
    // Hits are checked against the store: without one to look in (not mounted yet, or the
    // wrong path), every entry would look pruned, so nothing is keyed, served or stored.
    if !tokio::fs::metadata(&cache.store).await.is_ok_and(|m| m.is_dir()) {
        if !cache.warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(artifacts_dir = %cache.store.display(), "node result cache skipped: artifacts_dir is not a directory here; point it at the workers' store (RENDERFLEET_ARTIFACTS_DIR)");
        }
        return Ok((ready, Vec::new()));
    }
    let modules: Vec<&str> = {
        let set: HashSet<&str> = ready.iter().map(|r| r.task.module_key.as_str()).filter(|m| registry().cache_type(m).is_some()).collect();
        set.into_iter().collect()
    };
    let runs: Vec<Uuid> = ready.iter().filter(|r| registry().cache_type(&r.task.module_key).is_some()).map(|r| r.task.run_id).collect();
    let (fleet, refresh) =
        tokio::try_join!(async { client.query(sql::FLEET_FINGERPRINTS, &[&modules, &cache.live_for.as_secs_f64()]).await }, async {
            client.query(sql::REFRESHING_RUNS, &[&runs]).await
        },)?;
    // A module's fingerprint only when every live worker of it reports the same one.
    let fleet: HashMap<String, String> = fleet
        .iter()
        .filter_map(|r| {
            let prints: Vec<String> = r.get("fingerprints");
            (prints.len() == 1 && !prints[0].is_empty()).then(|| (r.get("module"), prints[0].clone()))
        })
        .collect();
    let refresh: HashSet<Uuid> = refresh.iter().map(|r| r.get("id")).collect();

    let mut ready = ready;
    let mut wanted: Vec<String> = Vec::new();
    for r in ready.iter_mut() {
        let Some(type_key) = registry().cache_type(&r.task.module_key) else { continue };
        let Some(fingerprint) = fleet.get(&r.task.module_key) else {
            metrics::counter!(m::CACHE_MISSES_TOTAL, "module" => r.task.module_key.clone(), "reason" => "fleet_mixed").increment(1);
            continue;
        };
        let inputs: BTreeMap<String, Value> = r.task.inputs.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let key = cache::key(type_key, fingerprint, &r.task.params, &inputs);
        if refresh.contains(&r.task.run_id) {
            metrics::counter!(m::CACHE_MISSES_TOTAL, "module" => r.task.module_key.clone(), "reason" => "refresh").increment(1);
        } else {
            wanted.push(key.clone());
        }
        r.task.cache = Some(CacheHint { key, fingerprint: fingerprint.clone() });
    }
    if wanted.is_empty() {
        return Ok((ready, Vec::new()));
    }

    let rows = client.query(sql::CACHE_ENTRIES, &[&wanted]).await?;
    let mut entries: HashMap<String, (Value, Uuid)> = HashMap::new();
    for row in &rows {
        let (key, outputs, from): (String, Value, Uuid) = (row.get("key"), row.get("outputs"), row.get("node_run_id"));
        if all_stored(&cache.store, &outputs).await {
            entries.insert(key, (outputs, from));
        } else {
            // Its bytes were pruned: the entry can never answer again. A newer entry stored
            // meanwhile under the same key is kept (the delete names this producer).
            tracing::info!(%key, node_run = %from, "cache entry dropped: an artifact it names is no longer in the store");
            client.execute(sql::DROP_CACHE_ENTRY, &[&key, &from]).await?;
        }
    }
    let missing: HashSet<&str> = rows.iter().map(|r| r.get::<_, &str>("key")).filter(|k| !entries.contains_key(*k)).collect();

    let now_us = chrono::Utc::now().timestamp_micros();
    let (mut publish, mut hits) = (Vec::with_capacity(ready.len()), Vec::new());
    for r in ready {
        let hint = r.task.cache.as_ref().filter(|_| !refresh.contains(&r.task.run_id));
        let Some(hint) = hint else {
            publish.push(r);
            continue;
        };
        // A task can be its own entry's producer when its attempt was re-published after the
        // result was stored but before the row was marked (then the result is ignored anyway).
        match entries.get(&hint.key).filter(|(_, from)| *from != r.task.node_run_id) {
            Some((outputs, from)) => {
                metrics::counter!(m::CACHE_HITS_TOTAL, "module" => r.task.module_key.clone()).increment(1);
                hits.push(Hit {
                    outbox_id: r.outbox_id,
                    finished: Finished {
                        node_run_id: r.task.node_run_id,
                        attempt: r.task.attempt,
                        worker_id: cache::WORKER.into(),
                        started_at_us: now_us,
                        finished_at_us: now_us,
                        outcome: Outcome::Succeeded { outputs: outputs.clone() },
                        cache: Some(CacheEnd::Hit { key: hint.key.clone(), from: *from }),
                    },
                });
            }
            None => {
                let reason = if missing.contains(hint.key.as_str()) { "artifact_missing" } else { "no_entry" };
                metrics::counter!(m::CACHE_MISSES_TOTAL, "module" => r.task.module_key.clone(), "reason" => reason).increment(1);
                publish.push(r);
            }
        }
    }
    Ok((publish, hits))
}

/// Whether every artifact `outputs` names is in the store under `root`, and for a frames
/// manifest every frame it names (the encode after a hit reads them).
async fn all_stored(root: &std::path::Path, outputs: &Value) -> bool {
    let there = |sha: &str| {
        let path = store_path(sha).map(|p| root.join(p));
        async move {
            match path {
                Some(p) => tokio::fs::try_exists(p).await.unwrap_or(false),
                None => false,
            }
        }
    };
    for r in refs_in(outputs) {
        if !there(&r.sha256).await {
            return false;
        }
        if r.kind == "frames" {
            let Some(bytes) = store_path(&r.sha256).map(|p| root.join(p)) else { return false };
            let Ok(manifest) = tokio::fs::read(bytes).await.map(|b| serde_json::from_slice::<Value>(&b).unwrap_or_default()) else {
                return false;
            };
            for f in manifest["frames"].as_array().into_iter().flatten() {
                if !there(f["sha256"].as_str().unwrap_or_default()).await {
                    return false;
                }
            }
        }
    }
    true
}
