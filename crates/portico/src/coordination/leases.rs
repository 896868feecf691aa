//! The coordination store of a gateway in a cluster: `coordination.k8s.io/v1` Leases in the
//! gateway's namespace, one per member (`<gateway>-member-<replica>`) and one per bucket
//! (`<gateway>-bucket-<n>`), as Kubernetes' own leader election keeps them: `holderIdentity`,
//! `renewTime`, `leaseDurationSeconds`, and every update a replace at the `resourceVersion`
//! read, which the API server refuses with 409 Conflict when the Lease moved on. A bucket's
//! checkpoints are its Lease's annotation `portico.dev/checkpoints` (JSON).

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};

use super::{BucketRecord, MemberRecord, Store, StoreError, Versioned};
use crate::error::BoxFuture;

/// The label naming the gateway a Lease coordinates.
const GATEWAY_LABEL: &str = "portico.dev/gateway";
/// The label saying what a Lease is: `member` or `bucket`.
const ROLE_LABEL: &str = "portico.dev/lease";
/// The annotation holding a bucket's checkpoints.
const CHECKPOINTS: &str = "portico.dev/checkpoints";

/// Leases of one gateway.
pub(crate) struct LeaseStore {
    api: Api<Lease>,
    gateway: String,
}

impl LeaseStore {
    /// The Leases of `gateway` in `namespace`.
    pub(crate) fn new(client: Client, namespace: &str, gateway: &str) -> LeaseStore {
        LeaseStore {
            api: Api::namespaced(client, namespace),
            gateway: gateway.to_string(),
        }
    }

    fn meta(
        &self,
        name: String,
        role: &str,
        annotations: Option<BTreeMap<String, String>>,
    ) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            labels: Some(BTreeMap::from([
                (GATEWAY_LABEL.to_string(), self.gateway.clone()),
                (ROLE_LABEL.to_string(), role.to_string()),
            ])),
            annotations,
            ..ObjectMeta::default()
        }
    }

    async fn list(&self, role: &str) -> Result<Vec<Lease>, StoreError> {
        let selector = format!("{GATEWAY_LABEL}={},{ROLE_LABEL}={role}", self.gateway);
        self.api
            .list(&ListParams::default().labels(&selector))
            .await
            .map(|l| l.items)
            .map_err(failed)
    }
}

fn failed(e: kube::Error) -> StoreError {
    match &e {
        kube::Error::Api(s) if s.code == 409 => StoreError::Conflict,
        _ => StoreError::Failed(format!("Kubernetes API: {e}")),
    }
}

fn micro(ms: i64) -> Option<MicroTime> {
    Timestamp::from_millisecond(ms).ok().map(MicroTime)
}

fn millis(t: &Option<MicroTime>) -> i64 {
    t.as_ref().map_or(0, |t| t.0.as_millisecond())
}

/// Lease durations are whole seconds: a lease rounds up.
fn seconds(ms: i64) -> i32 {
    ((ms + 999) / 1000).clamp(0, i64::from(i32::MAX)) as i32
}

impl Store for LeaseStore {
    fn kind(&self) -> &'static str {
        "kubernetes"
    }

    fn put_member<'a>(&'a self, me: &'a MemberRecord) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let name = format!("{}-member-{}", self.gateway, me.name);
            let spec = LeaseSpec {
                holder_identity: Some(me.name.clone()),
                renew_time: micro(me.renewed_ms),
                lease_duration_seconds: Some(seconds(me.lease_ms)),
                ..LeaseSpec::default()
            };
            // A member's Lease is its own: read, then replace at that version (or create).
            match self.api.get_opt(&name).await.map_err(failed)? {
                Some(mut lease) => {
                    lease.spec = Some(spec);
                    self.api
                        .replace(&name, &PostParams::default(), &lease)
                        .await
                        .map_err(failed)?;
                }
                None => {
                    let lease = Lease {
                        metadata: self.meta(name, "member", None),
                        spec: Some(spec),
                    };
                    self.api
                        .create(&PostParams::default(), &lease)
                        .await
                        .map_err(failed)?;
                }
            }
            Ok(())
        })
    }

    fn remove_member<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), StoreError>> {
        Box::pin(async move {
            let name = format!("{}-member-{name}", self.gateway);
            match self.api.delete(&name, &DeleteParams::default()).await {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
                Err(e) => Err(failed(e)),
            }
        })
    }

    fn members(&self) -> BoxFuture<'_, Result<Vec<MemberRecord>, StoreError>> {
        Box::pin(async move {
            Ok(self
                .list("member")
                .await?
                .into_iter()
                .filter_map(|l| {
                    let spec = l.spec?;
                    Some(MemberRecord {
                        name: spec.holder_identity?,
                        renewed_ms: millis(&spec.renew_time),
                        lease_ms: i64::from(spec.lease_duration_seconds.unwrap_or(0)) * 1000,
                    })
                })
                .collect())
        })
    }

    fn buckets(&self) -> BoxFuture<'_, Result<BTreeMap<u32, Versioned<BucketRecord>>, StoreError>> {
        Box::pin(async move {
            let prefix = format!("{}-bucket-", self.gateway);
            let mut out = BTreeMap::new();
            for lease in self.list("bucket").await? {
                let Some(n) = lease
                    .metadata
                    .name
                    .as_deref()
                    .and_then(|n| n.strip_prefix(&prefix))
                    .and_then(|n| n.parse::<u32>().ok())
                else {
                    continue;
                };
                let spec = lease.spec.unwrap_or_default();
                let checkpoints = lease
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(CHECKPOINTS))
                    .and_then(|j| serde_json::from_str(j).ok())
                    .unwrap_or_default();
                out.insert(
                    n,
                    Versioned {
                        value: BucketRecord {
                            holder: spec.holder_identity.filter(|h| !h.is_empty()),
                            renewed_ms: millis(&spec.renew_time),
                            lease_ms: i64::from(spec.lease_duration_seconds.unwrap_or(0)) * 1000,
                            checkpoints,
                        },
                        revision: lease.metadata.resource_version.unwrap_or_default(),
                    },
                );
            }
            Ok(out)
        })
    }

    fn write_bucket<'a>(
        &'a self,
        bucket: u32,
        record: &'a BucketRecord,
        revision: Option<&'a str>,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(async move {
            let name = format!("{}-bucket-{bucket}", self.gateway);
            let annotations = (!record.checkpoints.is_empty()).then(|| {
                BTreeMap::from([(
                    CHECKPOINTS.to_string(),
                    serde_json::to_string(&record.checkpoints).unwrap_or_default(),
                )])
            });
            let mut metadata = self.meta(name.clone(), "bucket", annotations);
            metadata.resource_version = revision.map(str::to_string);
            let lease = Lease {
                metadata,
                spec: Some(LeaseSpec {
                    holder_identity: record.holder.clone(),
                    renew_time: micro(record.renewed_ms),
                    lease_duration_seconds: Some(seconds(record.lease_ms)),
                    ..LeaseSpec::default()
                }),
            };
            let written = match revision {
                None => self.api.create(&PostParams::default(), &lease).await,
                Some(_) => {
                    self.api
                        .replace(&name, &PostParams::default(), &lease)
                        .await
                }
            }
            .map_err(failed)?;
            Ok(written.metadata.resource_version.unwrap_or_default())
        })
    }
}
