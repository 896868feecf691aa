//! A key of a Kubernetes Secret, for the configurations that name one as Argo Events v0.6's
//! did (`{name, key}`): read through the gateway's Kubernetes client (in a cluster, or from
//! `KUBECONFIG` outside one) each time it is needed, so a rotated Secret is picked up.

use base64::Engine;
use kube::api::{Api, ApiResource, DynamicObject};
use portico::{ConfigContext, ConfigError, Secret, SecretSource};
use schemars::JsonSchema;
use serde::Deserialize;

/// A key of a Kubernetes Secret (Kubernetes' `SecretKeySelector`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeySelector {
    /// The Secret's name, in the gateway's namespace.
    pub name: String,
    /// The key in the Secret's data.
    pub key: String,
    /// Accepted for Kubernetes' shape; the key is required all the same.
    #[serde(default)]
    pub optional: Option<bool>,
}

/// A credential given in a file, an environment variable, or a key of a Kubernetes Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SecretFrom {
    /// A file or an environment variable.
    Local(SecretSource),
    /// A key of a Kubernetes Secret.
    Kube(SecretKeySelector),
}

impl SecretFrom {
    /// The three ways of giving credential `field` (`<field>File`, `<field>Env`, or `<field>`
    /// naming a key of a Kubernetes Secret), at most one of them; errors name the field.
    pub(crate) fn from_fields(
        field: &str,
        file: Option<&str>,
        env: Option<&str>,
        kube: Option<SecretKeySelector>,
    ) -> Result<Option<SecretFrom>, ConfigError> {
        let local = SecretSource::from_fields(field, file, env)?;
        match (local, kube) {
            (Some(_), Some(_)) => Err(ConfigError::invalid(format!(
                "{field}: both {field} (a Kubernetes Secret) and {field}File or {field}Env are set: give one"
            ))),
            (Some(s), None) => Ok(Some(SecretFrom::Local(s))),
            (None, Some(sel)) => {
                if sel.name.trim().is_empty() {
                    return Err(ConfigError::invalid(format!(
                        "{field}.name: empty (required)"
                    )));
                }
                if sel.key.trim().is_empty() {
                    return Err(ConfigError::invalid(format!(
                        "{field}.key: empty (required)"
                    )));
                }
                Ok(Some(SecretFrom::Kube(sel)))
            }
            (None, None) => Ok(None),
        }
    }

    /// The field of credential `field` it was given in (`<field>File`, …), for errors.
    pub(crate) fn field(&self, field: &str) -> String {
        match self {
            SecretFrom::Local(SecretSource::File(_)) => format!("{field}File"),
            SecretFrom::Local(SecretSource::Env(_)) => format!("{field}Env"),
            SecretFrom::Kube(_) => field.to_string(),
        }
    }
}

/// Reads the key `sel` names through the gateway's Kubernetes client, in the gateway's
/// namespace (the client's default one outside a cluster). Errors name `field`: a gateway
/// with no client is `invalid`, a Secret that cannot be read `failed` (it may appear later).
pub(crate) async fn read_selected(
    ctx: &ConfigContext,
    field: &str,
    sel: &SecretKeySelector,
) -> Result<Secret, ConfigError> {
    let Some(client) = ctx.gateway().kube_client() else {
        return Err(ConfigError::invalid(format!(
            "{field}: names key `{}` of Kubernetes Secret `{}`, which needs the gateway to run in a cluster or KUBECONFIG to be set; or give {field}File or {field}Env",
            sel.key, sel.name
        )));
    };
    let namespace = match ctx.gateway().namespace() {
        "" => client.default_namespace().to_string(),
        ns => ns.to_string(),
    };
    read(client, &namespace, &sel.name, &sel.key)
        .await
        .map_err(|e| ConfigError::failed(format!("{field}: {e}")))
}

/// Key `key` of the Secret `name` in `namespace`, without trailing newlines. An error says
/// where it was looked for (never the value), for the caller to prefix with its field.
pub(crate) async fn read(
    client: kube::Client,
    namespace: &str,
    name: &str,
    key: &str,
) -> Result<Secret, String> {
    let secrets = ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "Secret".into(),
        plural: "secrets".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(client, namespace, &secrets);
    let where_ = format!("the Kubernetes Secret `{name}` in namespace `{namespace}`");
    let secret = api.get(name).await.map_err(|e| match e {
        kube::Error::Api(s) if s.code == 404 => format!("cannot read {where_}: it does not exist"),
        e => format!("cannot read {where_}: {e}"),
    })?;
    let encoded = secret.data["data"][key]
        .as_str()
        .ok_or_else(|| format!("{where_} has no key `{key}`"))?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| format!("key `{key}` of {where_} is not base64"))?;
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r'))
        .map_or(0, |i| i + 1);
    if end == 0 {
        return Err(format!("key `{key}` of {where_} is empty"));
    }
    Ok(Secret::new(&bytes[..end]))
}
