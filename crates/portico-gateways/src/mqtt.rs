//! The `mqtt` gateway: messages of an MQTT topic filter (MQTT 3.1.1).
//!
//! Its configuration, what its events carry and how it acknowledges its sources: [`MqttConfig`].

use portico::secret::redact_url;
use std::time::Duration;

use portico::{ConfigContext, ConfigError, ConfigExecutor, Event, SecretSource};
use std::sync::Arc;

use rumqttc::{
    AsyncClient, Event as MqttEvent, MqttOptions, Packet, QoS, TlsConfiguration, Transport,
};
use schemars::JsonSchema;
use serde::Deserialize;

use crate::broker::{self, Progress, SessionError, SessionResult, accepted};

/// An `mqtt` configuration.
///
/// Payload: the message payload, untouched (MQTT 3.1.1 carries no content type). Extension:
/// `topic` (the message's topic).
///
/// With `qos: 1` the gateway keeps a persistent session (clean session off) and acknowledges
/// each message (`PUBACK`) only after its CloudEvent is accepted for delivery; messages
/// published while it is stopped, and those it received but never acknowledged, are sent
/// again by the broker when it comes back with the same `clientId`. While a message waits
/// for room in a full dispatcher the connection is not serviced; if that lasts longer than the
/// keep-alive (15 s, ×1.5) the broker drops it, the gateway reconnects and the broker sends
/// the unacknowledged messages again.
///
/// A lost connection is reported on the node and re-established with capped backoff; the
/// subscription is made again on every connection.
///
/// Security: TLS with `mqtts://` (or `ssl://`) or a `tls` block (a CA, and a client
/// certificate for mutual TLS), and a `user` with its password from a file or an environment
/// variable, never shown; the files are read at every connection (a changed TLS file makes a
/// new connection at once).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MqttConfig {
    /// The broker: `mqtt://host[:port]` or `tcp://host[:port]` (port 1883 by default), or
    /// over TLS `mqtts://host[:port]` or `ssl://host[:port]` (port 8883 by default).
    pub url: String,
    /// The topic filter; the wildcards `+` and `#` are allowed.
    pub topic: String,
    /// The MQTT client id. Unique per broker: two clients with one id evict each other.
    pub client_id: String,
    /// `0` (at most once) or `1` (at least once: a persistent session, each message
    /// acknowledged only once its event is accepted).
    #[serde(default)]
    pub qos: Qos,
    /// TLS toward the broker: its CA (Mozilla's roots by default), and a client certificate
    /// for mutual TLS. Given, the connection is TLS whatever the URL's scheme; a certificate
    /// the CA did not sign is refused and the node says so.
    #[serde(default)]
    pub tls: Option<broker::TlsConfig>,
    /// A user name, with `passwordFile` or `passwordEnv` (or alone, for a broker that takes
    /// a user without a password).
    #[serde(default)]
    pub user: Option<String>,
    /// A file holding the user's password.
    #[serde(default)]
    pub password_file: Option<String>,
    /// An environment variable holding the user's password, instead of `passwordFile`.
    #[serde(default)]
    pub password_env: Option<String>,
}

/// The MQTT quality of service of the subscription.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(try_from = "u8")]
#[schemars(with = "u8")]
pub enum Qos {
    /// `0`: at most once.
    #[default]
    AtMostOnce,
    /// `1`: at least once.
    AtLeastOnce,
}

impl TryFrom<u8> for Qos {
    type Error = String;

    fn try_from(n: u8) -> Result<Qos, String> {
        match n {
            0 => Ok(Qos::AtMostOnce),
            1 => Ok(Qos::AtLeastOnce),
            n => Err(format!("qos {n} is not supported: use 0 or 1")),
        }
    }
}

/// A checked `mqtt` configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    url: String,
    host: String,
    port: u16,
    topic: String,
    client_id: String,
    qos: QoS,
    tls: Option<broker::Tls>,
    user: Option<(String, Option<SecretSource>)>,
}

impl MqttConfig {
    /// Checks what the fields' types do not; errors name the field.
    pub fn check(self) -> Result<Settings, ConfigError> {
        let u = broker::check_url("url", &self.url, &["mqtt", "tcp", "mqtts", "ssl"])?;
        let secure = matches!(u.scheme(), "mqtts" | "ssl");
        let tls = match &self.tls {
            Some(t) => Some(t.check()?),
            None if secure => Some(broker::Tls::default()),
            None => None,
        };
        let password = SecretSource::from_fields(
            "password",
            self.password_file.as_deref(),
            self.password_env.as_deref(),
        )?;
        let user = match (broker::optional(self.user), password) {
            (Some(u), p) => Some((u, p)),
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    "user: missing (a password goes with a user)",
                ));
            }
            (None, None) => None,
        };
        Ok(Settings {
            host: u.host_str().unwrap_or_default().to_string(),
            port: u.port().unwrap_or(if secure { 8883 } else { 1883 }),
            tls,
            user,
            topic: broker::non_blank("topic", &self.topic)?.to_string(),
            client_id: broker::non_blank("clientId", &self.client_id)?.to_string(),
            qos: match self.qos {
                Qos::AtMostOnce => QoS::AtMostOnce,
                Qos::AtLeastOnce => QoS::AtLeastOnce,
            },
            url: self.url,
        })
    }
}

/// The `mqtt` gateway's executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct Mqtt;

impl ConfigExecutor for Mqtt {
    type Config = Settings;

    fn validate(&self, ctx: &ConfigContext) -> Result<Settings, ConfigError> {
        ctx.parse::<MqttConfig>()?.check()
    }

    async fn start_config(&self, ctx: ConfigContext, c: Settings) -> Result<(), ConfigError> {
        broker::run_sessions_until_they_stop(&ctx, c.tls.as_ref(), |progress| {
            session(&ctx, &c, progress)
        })
        .await
    }
}

async fn session(ctx: &ConfigContext, c: &Settings, progress: Progress) -> SessionResult {
    let mut options = MqttOptions::new(c.client_id.clone(), c.host.clone(), c.port);
    options
        .set_keep_alive(Duration::from_secs(15))
        .set_clean_session(c.qos == QoS::AtMostOnce)
        .set_manual_acks(c.qos == QoS::AtLeastOnce);
    // Read at every connection: renewed certificates and passwords are taken.
    if let Some(tls) = &c.tls {
        let config = tls.client_config().map_err(SessionError::Broker)?;
        options.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
            Arc::new(config),
        )));
    }
    if let Some((user, password)) = &c.user {
        let password = match password {
            None => String::new(),
            Some(source) => broker::credential(source, "password")?,
        };
        options.set_credentials(user.clone(), password);
    }
    let (client, mut events) = AsyncClient::new(options, 64);
    let result = async {
        loop {
            let polled = tokio::select! {
                p = events.poll() => p,
                _ = ctx.stopped() => return Ok(()),
            };
            let event = polled.map_err(|e| {
                SessionError::broker(
                    format!(
                        "connection to the MQTT broker at {} lost",
                        redact_url(&c.url)
                    ),
                    e,
                )
            })?;
            match event {
                MqttEvent::Incoming(Packet::ConnAck(_)) => {
                    client
                        .try_subscribe(c.topic.clone(), c.qos)
                        .map_err(|e| SessionError::broker("cannot subscribe", e))?;
                }
                MqttEvent::Incoming(Packet::SubAck(ack)) => {
                    if ack
                        .return_codes
                        .iter()
                        .any(|r| matches!(r, rumqttc::SubscribeReasonCode::Failure))
                    {
                        return Err(SessionError::Broker(format!(
                            "the broker refused the subscription to `{}`",
                            c.topic
                        )));
                    }
                    progress.running(ctx);
                }
                MqttEvent::Incoming(Packet::Publish(p)) => {
                    let event =
                        Event::new(p.payload.clone()).with_extension("topic", p.topic.as_str());
                    if !accepted(ctx.dispatch(event).await)? {
                        return Ok(());
                    }
                    if p.qos != QoS::AtMostOnce {
                        client
                            .try_ack(&p)
                            .map_err(|e| SessionError::broker("cannot acknowledge a message", e))?;
                    }
                }
                _ => {}
            }
        }
    }
    .await;
    if ctx.is_stopped() {
        // A clean DISCONNECT; the persistent session (qos 1) keeps what was not acknowledged.
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(yaml: &str) -> Result<Settings, ConfigError> {
        portico::testing::parse_config::<MqttConfig>(yaml)?.check()
    }

    #[test]
    fn validation_names_the_field() {
        let ok = check("url: mqtt://127.0.0.1\ntopic: a/#\nclientId: c\nqos: 1").unwrap();
        assert_eq!(ok.port, 1883);
        assert_eq!(ok.qos, QoS::AtLeastOnce);
        let e = check("topic: a\nclientId: c").unwrap_err();
        assert!(e.message().contains("missing field `url`"), "{e}");
        let e = check("url: redis://x\ntopic: a\nclientId: c").unwrap_err();
        assert!(e.message().starts_with("url:"), "{e}");
        let e = check("url: mqtt://x\nclientId: c").unwrap_err();
        assert!(e.message().contains("missing field `topic`"), "{e}");
        let e = check("url: mqtt://x\ntopic: ' '\nclientId: c").unwrap_err();
        assert!(e.message().starts_with("topic:"), "{e}");
        let e = check("url: mqtt://x\ntopic: a").unwrap_err();
        assert!(e.message().contains("missing field `clientId`"), "{e}");
        let e = check("url: mqtt://x\ntopic: a\nclientId: c\nqos: 2").unwrap_err();
        assert!(
            e.message().contains("qos 2 is not supported") && e.message().contains("line 4"),
            "{e}"
        );
    }
}
