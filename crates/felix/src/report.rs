//! State reporting into the datastore (upstream `felix/statusrep` and the status heartbeat):
//!
//! - every `ReportingInterval`: `/calico/felix/v2/<region>/host/<node>/status` attached to a
//!   lease of `ReportingTTL`, and `/calico/felix/v2/<region>/host/<node>/last_reported_status`
//!   without one; value `{"time": <RFC 3339>, "uptime": <seconds>, "first_update": <bool>}`;
//! - with `EndpointReportingEnabled`: `{"status": "up"|"down"}` per local workload endpoint at
//!   `/calico/felix/v2/<region>/host/<node>/workload/<orch>/<workload>/endpoint/<endpoint>`
//!   (names escaped: `/` → `%2f`), rate-limited by `EndpointReportingDelay`; keys of gone
//!   endpoints are deleted.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use calico_datastore::{KvError, KvStore};
use felix_calc::msg::WorkloadEndpointId;
use tracing::{debug, warn};

use crate::endpoints::EndpointStatus;

/// Each datastore write gets this long (upstream: 2 s).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// `/calico/felix/v2/<region>/host/<node>`.
pub fn host_prefix(region: &str, node: &str) -> String {
    format!("/calico/felix/v2/{region}/host/{node}")
}

fn escape(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2f")
}

/// The endpoint-status key of a workload endpoint.
pub fn endpoint_key(region: &str, node: &str, id: &WorkloadEndpointId) -> String {
    format!(
        "{}/workload/{}/{}/endpoint/{}",
        host_prefix(region, node),
        escape(&id.orchestrator_id),
        escape(&id.workload_id),
        escape(&id.endpoint_id)
    )
}

async fn timed<T>(f: impl std::future::Future<Output = Result<T, KvError>>) -> Result<T, KvError> {
    tokio::time::timeout(WRITE_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| Err(KvError::Unavailable("write timed out after 2s".into())))
}

/// Writes the status heartbeat once.
pub async fn write_status(
    kv: &Arc<dyn KvStore>,
    region: &str,
    node: &str,
    uptime: Duration,
    first_update: bool,
    ttl: Duration,
) -> Result<(), KvError> {
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let value = serde_json::json!({
        "time": now,
        "uptime": uptime.as_secs_f64(),
        "first_update": first_update,
    })
    .to_string()
    .into_bytes();
    let prefix = host_prefix(region, node);
    let lease = timed(kv.grant_lease(ttl)).await?;
    timed(kv.put(&format!("{prefix}/status"), value.clone(), Some(lease))).await?;
    timed(kv.put(&format!("{prefix}/last_reported_status"), value, None)).await?;
    debug!(node, "status reported");
    Ok(())
}

/// Per-endpoint status in the datastore; remembers what it wrote.
#[derive(Default)]
pub struct EndpointReporter {
    written: BTreeMap<WorkloadEndpointId, EndpointStatus>,
}

impl EndpointReporter {
    /// Brings the datastore to `statuses`. Returns the number of failed writes.
    pub async fn sync(
        &mut self,
        kv: &Arc<dyn KvStore>,
        region: &str,
        node: &str,
        statuses: &BTreeMap<WorkloadEndpointId, EndpointStatus>,
    ) -> usize {
        let mut failures = 0;
        for (id, st) in statuses {
            if self.written.get(id) == Some(st) {
                continue;
            }
            let key = endpoint_key(region, node, id);
            let value = serde_json::json!({"status": st.as_str()})
                .to_string()
                .into_bytes();
            match timed(kv.put(&key, value, None)).await {
                Ok(_) => {
                    self.written.insert(id.clone(), *st);
                }
                Err(e) => {
                    warn!(%key, error = %e, "endpoint status write failed");
                    failures += 1;
                }
            }
        }
        let gone: Vec<WorkloadEndpointId> = self
            .written
            .keys()
            .filter(|id| !statuses.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            let key = endpoint_key(region, node, &id);
            match timed(kv.delete(&key, None)).await {
                Ok(_) | Err(KvError::NotFound { .. }) => {
                    self.written.remove(&id);
                }
                Err(e) => {
                    warn!(%key, error = %e, "endpoint status delete failed");
                    failures += 1;
                }
            }
        }
        failures
    }

    /// Deletes every key this reporter wrote (reporting switched off).
    pub async fn clear(&mut self, kv: &Arc<dyn KvStore>, region: &str, node: &str) {
        self.sync(kv, region, node, &BTreeMap::new()).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use calico_datastore::sqlite::SqliteStore;

    #[tokio::test]
    async fn status_keys_and_endpoint_reports() {
        let dir = tempfile::tempdir().unwrap();
        let kv: Arc<dyn KvStore> = Arc::new(SqliteStore::open(dir.path().join("db")).unwrap());
        write_status(
            &kv,
            "no-region",
            "n1",
            Duration::from_secs(3),
            true,
            Duration::from_secs(90),
        )
        .await
        .unwrap();
        let st = kv
            .get("/calico/felix/v2/no-region/host/n1/status")
            .await
            .unwrap()
            .unwrap();
        assert!(st.lease.is_some());
        let v: serde_json::Value = serde_json::from_slice(&st.value).unwrap();
        assert_eq!(v["first_update"], true);
        assert_eq!(v["uptime"], 3.0);
        let last = kv
            .get("/calico/felix/v2/no-region/host/n1/last_reported_status")
            .await
            .unwrap()
            .unwrap();
        assert!(last.lease.is_none());

        let id = WorkloadEndpointId {
            orchestrator_id: "k8s".into(),
            workload_id: "ns1/pod1".into(),
            endpoint_id: "eth0".into(),
        };
        let mut rep = EndpointReporter::default();
        let mut m = BTreeMap::new();
        m.insert(id.clone(), EndpointStatus::Up);
        assert_eq!(rep.sync(&kv, "no-region", "n1", &m).await, 0);
        let key = "/calico/felix/v2/no-region/host/n1/workload/k8s/ns1%2fpod1/endpoint/eth0";
        let got = kv.get(key).await.unwrap().unwrap();
        assert_eq!(got.value, br#"{"status":"up"}"#.to_vec());
        rep.clear(&kv, "no-region", "n1").await;
        assert!(kv.get(key).await.unwrap().is_none());
    }
}
