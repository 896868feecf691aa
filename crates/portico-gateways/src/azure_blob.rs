//! The `azure-blob` gateway: blobs created, changed and deleted in an Azure Storage
//! container, told by polling the container's listing.
//!
//! Its configuration, what its events carry and how a change is told: [`AzureBlobConfig`].
//!
//! Polling, not notifications: Azure tells blob changes through Event Grid (or a Storage
//! queue Event Grid writes to), which needs an Event Grid subscription in Azure and which
//! Azurite does not have. Every `interval` the container is listed (List Blobs, with `prefix`,
//! page after page) and each blob's ETag compared with the last listing, kept in a small JSON
//! file (`stateFile`) like the `sftp` gateway's, written once the event is accepted, so a
//! restart emits only what changed meanwhile. Events carry the blob's properties and
//! metadata, never its content. For Event Grid's notifications, read the queue they are
//! written to with `azure-queue`.
//!
//! The account, its endpoint, the credentials and the client are shared with `azure-queue`
//! (`azure.rs`). A failed poll shows the node as `Error` naming the endpoint and Azure's
//! reason (never a credential), and polling goes on at the interval; the next success shows
//! it `Running` again.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use portico::{ConfigContext, ConfigError, ConfigExecutor, DispatchError, Event, Submit};
use reqwest::Method;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::azure::{AccountFields, AccountSettings, Client, Service, invalid};
use crate::broker;
pub use crate::kube_secret::SecretKeySelector;

/// The shortest `interval`.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Default of `interval`.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
/// The most blobs one List Blobs page holds.
const PAGE: &str = "5000";

/// A kind of change of a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum BlobChange {
    /// A blob not in the last listing.
    Created,
    /// A blob whose ETag differs from the last listing's (its content, properties or
    /// metadata were written).
    Changed,
    /// A blob of the last listing that is gone.
    Deleted,
}

impl BlobChange {
    fn as_str(self) -> &'static str {
        match self {
            BlobChange::Created => "created",
            BlobChange::Changed => "changed",
            BlobChange::Deleted => "deleted",
        }
    }
}

/// An `azure-blob` configuration: an Azure Storage container (or Azurite's), listed every
/// `interval`; each blob created, changed or deleted since the last listing is one event.
///
/// Give the container, and the account as for `azure-queue`: a connection string
/// (`connectionStringFile`, `connectionStringEnv` or `connectionString`; without any
/// credential field, the environment variable `AZURE_STORAGE_CONNECTION_STRING`), or
/// `account` and/or `endpoint` with the account key (`accountKey…`) or a SAS token
/// (`sasToken…`, permissions `rl` on the container). Credentials are shown nowhere.
///
/// Payload (JSON, never the blob's content): `{"event": "created" | "changed" | "deleted",
/// "account", "container", "name", "url", "size", "etag", "contentType", "lastModified"
/// (RFC 3339), "metadata": {…}}`; a deleted blob's are those of the last listing that had it.
/// The event's time is the blob's `Last-Modified` (the poll's for a deletion). Extensions:
/// `change` (`created`, `changed`, `deleted`), `container`, `blob` (its name), `etag`, and
/// `eventid`: the same for the same change of the same blob version (a hash of the account,
/// container, name, ETag and change), so an event emitted again after a restart can be told
/// from a new one; it is the CloudEvent's `id` too.
///
/// Change detection: every `interval` the container is listed (blobs whose names start with
/// `prefix`; not snapshots or versions) and each blob's ETag compared with the last listing;
/// the first listing (no state file) emits every blob as created. The listing is kept in
/// `stateFile`, written (a new file renamed over the old one) once each event is accepted
/// (with `spec.delivery.mode: ackAfterDelivery`, once every watcher took it), so a restart
/// of the gateway or the configuration emits only what changed meanwhile, and a change whose
/// event was not accepted is emitted again by the next poll. Changes not in `events` are
/// recorded without an event. A blob written twice between two polls is one change.
///
/// A failed poll (the service unreachable, the container missing, credentials refused)
/// shows the node as `Error` with Azure's reason, and polling goes on at the interval; the
/// next successful poll shows it `Running` again.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureBlobConfig {
    /// The container's name (3 to 63 lower-case letters, digits and single hyphens).
    pub container: String,
    /// Only blobs whose names start with this, like `incoming/` (default: every blob).
    #[serde(default)]
    pub prefix: Option<String>,
    /// Which changes are emitted: `created`, `changed`, `deleted` (default: all three).
    #[serde(default)]
    pub events: Option<Vec<BlobChange>>,
    /// How often to list the container: a duration like `30s` (the default), `5m` or `1h`;
    /// at least `1s`. Every listing page is a billed transaction.
    #[serde(default)]
    pub interval: Option<String>,
    /// The file the last listing is kept in (its directory is made when missing). Default:
    /// `portico-azure-blob-<configuration id>.json` in the system's temporary directory
    /// (`$TMPDIR` or `/tmp`); the id changes with the configuration's value, so a changed
    /// configuration starts over and emits every blob again. Give a path on a persistent
    /// volume to keep the listing across restarts of a pod.
    #[serde(default)]
    pub state_file: Option<String>,
    /// A file holding the account's connection string, like
    /// `AccountName=…;AccountKey=…;BlobEndpoint=…` (`UseDevelopmentStorage=true` for Azurite
    /// on its default ports). Its `BlobEndpoint`, else `https://<AccountName>.blob.<EndpointSuffix>`,
    /// is the endpoint; its `AccountKey` or `SharedAccessSignature` the credential.
    #[serde(default)]
    pub connection_string_file: Option<String>,
    /// An environment variable holding the connection string, instead of
    /// `connectionStringFile`.
    #[serde(default)]
    pub connection_string_env: Option<String>,
    /// The connection string from a key of a Kubernetes Secret in the gateway's namespace
    /// (read at every (re)connection; in a cluster, or with `KUBECONFIG`).
    #[serde(default)]
    pub connection_string: Option<SecretKeySelector>,
    /// The storage account's name, with `accountKey…` or `sasToken…` (default: the one
    /// `endpoint` names).
    #[serde(default)]
    pub account: Option<String>,
    /// The blob service's URL: `https://<account>.blob.core.windows.net` (the default with
    /// `account`), or path-style as Azurite serves it, `http://127.0.0.1:10000/devstoreaccount1`.
    /// With a connection string, it replaces the string's endpoint.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// A file holding the account key (base64, as the portal shows it): requests are signed
    /// with Shared Key.
    #[serde(default)]
    pub account_key_file: Option<String>,
    /// An environment variable holding the account key, instead of `accountKeyFile`.
    #[serde(default)]
    pub account_key_env: Option<String>,
    /// The account key from a key of a Kubernetes Secret, instead of `accountKeyFile`.
    #[serde(default)]
    pub account_key: Option<SecretKeySelector>,
    /// A file holding a SAS token (`sv=…&sig=…`) that allows listing the container
    /// (permissions `rl`), instead of the account key.
    #[serde(default)]
    pub sas_token_file: Option<String>,
    /// An environment variable holding the SAS token, instead of `sasTokenFile`.
    #[serde(default)]
    pub sas_token_env: Option<String>,
    /// The SAS token from a key of a Kubernetes Secret, instead of `sasTokenFile`.
    #[serde(default)]
    pub sas_token: Option<SecretKeySelector>,
}

/// A checked `azure-blob` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    container: String,
    prefix: String,
    events: Vec<BlobChange>,
    interval: Duration,
    state_file: Option<PathBuf>,
    account: AccountSettings,
}

/// Whether `name` is a container's name (as a queue's: 3 to 63 lower-case letters, digits and
/// single hyphens, starting and ending with a letter or digit).
fn is_container_name(name: &str) -> bool {
    (3..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

impl AzureBlobConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let container = broker::non_blank("container", &self.container)?.to_string();
        if !is_container_name(&container) {
            return Err(invalid(
                "container",
                format!(
                    "`{container}` is not a container name (3 to 63 lower-case letters, digits and single hyphens, starting and ending with a letter or digit)"
                ),
            ));
        }
        let prefix = self.prefix.unwrap_or_default();
        if prefix.len() > 1024 || prefix.chars().any(char::is_control) {
            return Err(invalid(
                "prefix",
                "is not a blob name's beginning (at most 1024 characters, no control characters)",
            ));
        }
        let mut events = match self.events {
            None => vec![
                BlobChange::Created,
                BlobChange::Changed,
                BlobChange::Deleted,
            ],
            Some(e) if e.is_empty() => {
                return Err(invalid(
                    "events",
                    "is empty: leave it out for created, changed and deleted",
                ));
            }
            Some(e) => e,
        };
        events.sort();
        events.dedup();
        let interval = crate::azure::duration_field(
            "interval",
            self.interval,
            DEFAULT_INTERVAL,
            MIN_INTERVAL,
            Duration::from_secs(24 * 60 * 60),
        )?;
        let state_file = match self.state_file.as_deref().map(str::trim) {
            None => None,
            Some("") => {
                return Err(invalid(
                    "stateFile",
                    "is empty: leave it out for the default",
                ));
            }
            Some(f) => Some(PathBuf::from(f)),
        };
        let account = AccountFields {
            connection_string_file: self.connection_string_file,
            connection_string_env: self.connection_string_env,
            connection_string: self.connection_string,
            account: self.account,
            endpoint: self.endpoint,
            account_key_file: self.account_key_file,
            account_key_env: self.account_key_env,
            account_key: self.account_key,
            sas_token_file: self.sas_token_file,
            sas_token_env: self.sas_token_env,
            sas_token: self.sas_token,
        }
        .check(Service::Blob)?;
        Ok(Settings {
            container,
            prefix,
            events,
            interval,
            state_file,
            account,
        })
    }
}

/// The `azure-blob` gateway's executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct AzureBlob;

impl ConfigExecutor for AzureBlob {
    type Config = Settings;

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        ctx.parse::<AzureBlobConfig>()?.check()
    }

    async fn start_config(&self, ctx: ConfigContext, s: Settings) -> Result<(), ConfigError> {
        let state_file = s.state_file.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("portico-azure-blob-{}.json", ctx.id()))
        });
        let mut poller = Poller {
            http: crate::azure::http_client()?,
            listing: None,
            state_file,
            client: None,
            health: broker::PollHealth::default(),
        };
        let mut ticks = tokio::time::interval(s.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = ctx.stopped() => return Ok(()),
            }
            let outcome = tokio::select! {
                r = poller.poll(&ctx, &s) => r,
                _ = ctx.stopped() => return Ok(()),
            };
            match outcome {
                Ok(true) => poller.health.succeeded(&ctx),
                Ok(false) => return Ok(()),
                Err(Failure::Fatal(e)) => return Err(e),
                Err(Failure::Poll(reason)) => {
                    poller.client = None;
                    poller.health.failed(&ctx, reason, s.interval);
                }
            }
        }
    }
}

/// What the last listing saw of one blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Seen {
    etag: String,
    size: u64,
    #[serde(default)]
    content_type: Option<String>,
    /// As Azure gives it (RFC 1123).
    #[serde(default)]
    last_modified: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// List Blobs' answer.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct EnumerationResults {
    #[serde(default)]
    blobs: BlobList,
    #[serde(default)]
    next_marker: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct BlobList {
    #[serde(rename = "Blob", default)]
    blobs: Vec<BlobItem>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct BlobItem {
    name: String,
    #[serde(default)]
    properties: BlobProperties,
    #[serde(default)]
    metadata: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
struct BlobProperties {
    #[serde(rename = "Last-Modified", default)]
    last_modified: Option<String>,
    #[serde(rename = "Etag", default)]
    etag: Option<String>,
    #[serde(rename = "Content-Length", default)]
    content_length: Option<u64>,
    #[serde(rename = "Content-Type", default)]
    content_type: Option<String>,
}

/// Why a poll ended early.
enum Failure {
    /// The poll failed (reported; the next poll tries again with a new client).
    Poll(String),
    /// The configuration cannot go on.
    Fatal(ConfigError),
}

/// What one configuration keeps between polls.
struct Poller {
    http: reqwest::Client,
    /// The last listing: name → what was seen; `None` until the state file is read (once
    /// the endpoint is known).
    listing: Option<BTreeMap<String, Seen>>,
    state_file: PathBuf,
    client: Option<Client>,
    health: broker::PollHealth,
}

impl Poller {
    /// One poll: list, emit what changed. `Ok(false)`: the configuration is stopping.
    async fn poll(&mut self, ctx: &ConfigContext, s: &Settings) -> Result<bool, Failure> {
        if self.client.is_none() {
            match Client::connect(ctx, &s.account, self.http.clone()).await {
                Ok(Some(c)) => self.client = Some(c),
                Ok(None) => return Ok(false),
                Err(broker::SessionError::Fatal(e)) => return Err(Failure::Fatal(e)),
                Err(broker::SessionError::Broker(why)) => return Err(Failure::Poll(why)),
            }
        }
        let Some(client) = self.client.take() else {
            return Ok(false);
        };
        let outcome = self.poll_with(ctx, s, &client).await;
        self.client = Some(client);
        outcome
    }

    async fn poll_with(
        &mut self,
        ctx: &ConfigContext,
        s: &Settings,
        client: &Client,
    ) -> Result<bool, Failure> {
        let listing_of = format!("{}/{}/{}", client.shown(), s.container, s.prefix);
        let now = list(client, s).await?;
        let mut listing = match self.listing.take() {
            Some(l) => l,
            None => crate::listing::load(ctx, &self.state_file, &listing_of, "blob"),
        };
        let outcome = self
            .changes(ctx, s, client, &listing_of, &mut listing, now)
            .await;
        self.listing = Some(listing);
        outcome
    }

    /// Emits the changes from `listing` to `now`, recording each in `listing` once accepted.
    async fn changes(
        &self,
        ctx: &ConfigContext,
        s: &Settings,
        client: &Client,
        listing_of: &str,
        listing: &mut BTreeMap<String, Seen>,
        now: BTreeMap<String, Seen>,
    ) -> Result<bool, Failure> {
        let mut changes: Vec<(BlobChange, String, Seen)> = Vec::new();
        for (name, seen) in listing.iter() {
            if !now.contains_key(name) {
                changes.push((BlobChange::Deleted, name.clone(), seen.clone()));
            }
        }
        for (name, seen) in now {
            match listing.get(&name) {
                None => changes.push((BlobChange::Created, name, seen)),
                Some(old) if old.etag != seen.etag => {
                    changes.push((BlobChange::Changed, name, seen))
                }
                Some(_) => {}
            }
        }
        // Changes not asked for are recorded at once, without events.
        let (wanted, unwanted): (Vec<_>, Vec<_>) = changes
            .into_iter()
            .partition(|(c, _, _)| s.events.contains(c));
        if !unwanted.is_empty() {
            for (change, name, seen) in unwanted {
                record(listing, change, name, seen);
            }
            self.save(listing_of, listing).await?;
        }
        for (change, name, seen) in wanted {
            let event = blob_event(client, s, change, &name, &seen);
            let delivered = match ctx.submit(event, Submit::ACK_AFTER_DELIVERY).await {
                Ok(d) => d,
                Err(DispatchError::Stopped) => return Ok(false),
                Err(e @ (DispatchError::Full { .. } | DispatchError::Limited { .. })) => {
                    tracing::warn!(
                        src = ctx.src(),
                        "the {} event of blob {name} is not emitted now ({e}); the next poll tries again",
                        change.as_str()
                    );
                    continue;
                }
                Err(DispatchError::Disk(why)) => {
                    return Err(Failure::Poll(format!(
                        "the gateway cannot store events ({why}); the next poll tries again"
                    )));
                }
                Err(e) => return Err(Failure::Fatal(e.into())),
            };
            let done = delivered.is_done()
                || tokio::select! {
                    ok = delivered.wait() => ok,
                    _ = ctx.stopped() => false,
                };
            if !done {
                return Ok(false);
            }
            record(listing, change, name, seen);
            self.save(listing_of, listing).await?;
        }
        Ok(true)
    }

    async fn save(
        &self,
        listing_of: &str,
        listing: &BTreeMap<String, Seen>,
    ) -> Result<(), Failure> {
        crate::listing::save(&self.state_file, listing_of, listing)
            .await
            .map_err(Failure::Poll)
    }
}

/// Records a change in the listing.
fn record(listing: &mut BTreeMap<String, Seen>, change: BlobChange, name: String, seen: Seen) {
    if change == BlobChange::Deleted {
        listing.remove(&name);
    } else {
        listing.insert(name, seen);
    }
}

/// The container's blobs (with `prefix`), every page.
async fn list(client: &Client, s: &Settings) -> Result<BTreeMap<String, Seen>, Failure> {
    let mut blobs = BTreeMap::new();
    let mut marker: Option<String> = None;
    let path = [s.container.as_str()];
    loop {
        let mut query = vec![
            ("restype", "container"),
            ("comp", "list"),
            ("include", "metadata"),
            ("maxresults", PAGE),
        ];
        if !s.prefix.is_empty() {
            query.push(("prefix", s.prefix.as_str()));
        }
        if let Some(m) = &marker {
            query.push(("marker", m.as_str()));
        }
        let (_, body) = client
            .call(Method::GET, &path, &query, None)
            .await
            .map_err(|e| Failure::Poll(e.to_string()))?;
        let page: EnumerationResults = quick_xml::de::from_str(body.trim_start_matches('\u{feff}'))
            .map_err(|e| {
                Failure::Poll(format!(
                    "Azure Storage at {} answered List Blobs with what is not a blob listing: {e}",
                    client.shown()
                ))
            })?;
        for b in page.blobs.blobs {
            let p = b.properties;
            blobs.insert(
                b.name,
                Seen {
                    etag: p.etag.unwrap_or_default(),
                    size: p.content_length.unwrap_or(0),
                    content_type: p.content_type.filter(|t| !t.is_empty()),
                    last_modified: p.last_modified,
                    metadata: b.metadata.unwrap_or_default(),
                },
            );
        }
        match page.next_marker.filter(|m| !m.is_empty()) {
            Some(m) => marker = Some(m),
            None => return Ok(blobs),
        }
    }
}

/// The `eventid` of a change: the same for the same change of the same blob version.
fn event_id(account: &str, container: &str, name: &str, etag: &str, change: BlobChange) -> String {
    let digest = Sha256::digest(
        format!("{account}/{container}/{name}\n{etag}\n{}", change.as_str()).as_bytes(),
    );
    hex::encode(&digest[..16])
}

/// The event of one change.
fn blob_event(client: &Client, s: &Settings, change: BlobChange, name: &str, seen: &Seen) -> Event {
    // A blob's `/` separate its URL's path segments, as Azure names it.
    let segments: Vec<&str> = std::iter::once(s.container.as_str())
        .chain(name.split('/'))
        .collect();
    let url = client.url_of(&segments);
    let modified = seen
        .last_modified
        .as_deref()
        .and_then(crate::azure::parse_date);
    let data = serde_json::json!({
        "event": change.as_str(),
        "account": client.account(),
        "container": s.container,
        "name": name,
        "url": url.as_str(),
        "size": seen.size,
        "etag": seen.etag,
        "contentType": seen.content_type,
        "lastModified": modified.map(|t| t.to_rfc3339()),
        "metadata": seen.metadata,
    });
    let mut event = Event::json(&data).unwrap_or_else(|_| Event::new(data.to_string()));
    if change != BlobChange::Deleted
        && let Some(t) = modified
    {
        event = event.with_time(t);
    }
    let id = event_id(client.account(), &s.container, name, &seen.etag, change);
    event
        .with_id(id.as_str())
        .with_extension("change", change.as_str())
        .with_extension("container", s.container.as_str())
        .with_extension("blob", name)
        .with_extension("etag", seen.etag.as_str())
        .with_extension("eventid", id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigError> {
        portico::testing::parse_config::<AzureBlobConfig>(yaml)?.check()
    }

    const C: &str = "container: photos\nconnectionStringEnv: CS";

    #[test]
    fn configuration() {
        let s = check(C).unwrap();
        assert_eq!(s.container, "photos");
        assert_eq!(s.prefix, "");
        assert_eq!(s.interval, DEFAULT_INTERVAL);
        assert_eq!(s.events.len(), 3);
        assert_eq!(s.state_file, None);
        let s = check(&format!(
            "{C}\nprefix: in/\ninterval: 5s\nevents: [deleted, created, created]\nstateFile: /var/lib/p.json"
        ))
        .unwrap();
        assert_eq!(s.prefix, "in/");
        assert_eq!(s.events, [BlobChange::Created, BlobChange::Deleted]);
        assert_eq!(s.state_file, Some(PathBuf::from("/var/lib/p.json")));
    }

    #[test]
    fn errors_name_the_field() {
        for (yaml, field) in [
            (
                "connectionStringEnv: CS".to_string(),
                "missing field `container`",
            ),
            ("container: Photos".into(), "container:"),
            ("container: a".into(), "container:"),
            (format!("{C}\ninterval: 10ms"), "interval:"),
            (format!("{C}\ninterval: soon"), "interval:"),
            (format!("{C}\nevents: []"), "events:"),
            (format!("{C}\nevents: [renamed]"), "renamed"),
            (format!("{C}\nstateFile: ''"), "stateFile:"),
            (format!("{C}\nprefix: \"a\\nb\""), "prefix:"),
            (format!("{C}\nsasTokenEnv: S"), "sasToken:"),
            ("container: abc\nsasTokenEnv: S".into(), "account:"),
            (format!("{C}\nbogus: 1"), "bogus"),
        ] {
            let e = check(&yaml).unwrap_err().message().to_string();
            assert!(e.contains(field), "{yaml:?}: {e}");
        }
    }

    #[test]
    fn listings_are_read() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><EnumerationResults ServiceEndpoint="http://127.0.0.1:10000/devstoreaccount1" ContainerName="c"><Prefix>in/</Prefix><MaxResults>5000</MaxResults><Blobs><Blob><Name>in/a &amp; b.txt</Name><Properties><Creation-Time>Fri, 04 Dec 2026 04:17:31 GMT</Creation-Time><Last-Modified>Fri, 04 Dec 2026 04:17:31 GMT</Last-Modified><Etag>0x8DC1</Etag><Content-Length>5</Content-Length><Content-Type>text/plain</Content-Type><BlobType>BlockBlob</BlobType></Properties><Metadata><origin>test</origin></Metadata></Blob><Blob><Name>in/b</Name><Properties><Etag>"0x2"</Etag><Content-Length>0</Content-Length><Content-Type /></Properties><Metadata /></Blob></Blobs><NextMarker>next-page</NextMarker></EnumerationResults>"#;
        let page: EnumerationResults = quick_xml::de::from_str(xml).unwrap();
        assert_eq!(page.next_marker.as_deref(), Some("next-page"));
        assert_eq!(page.blobs.blobs.len(), 2);
        let a = &page.blobs.blobs[0];
        assert_eq!(a.name, "in/a & b.txt");
        assert_eq!(a.properties.etag.as_deref(), Some("0x8DC1"));
        assert_eq!(a.properties.content_length, Some(5));
        assert_eq!(a.metadata.as_ref().unwrap()["origin"], "test");
        let empty: EnumerationResults = quick_xml::de::from_str(
            r#"<EnumerationResults ContainerName="c"><Blobs /><NextMarker /></EnumerationResults>"#,
        )
        .unwrap();
        assert!(empty.blobs.blobs.is_empty());
        assert!(empty.next_marker.unwrap_or_default().is_empty());
    }

    #[test]
    fn event_ids_are_stable_per_blob_version_and_change() {
        let id = |etag, change| event_id("a", "c", "n", etag, change);
        assert_eq!(id("1", BlobChange::Created), id("1", BlobChange::Created));
        assert_ne!(id("1", BlobChange::Created), id("2", BlobChange::Changed));
        assert_ne!(id("1", BlobChange::Created), id("1", BlobChange::Deleted));
        assert_eq!(id("1", BlobChange::Created).len(), 32);
    }
}
