//! A key of a Kubernetes Secret, for the configurations that name one as Argo Events v0.6's
//! did (`{name, key}`): read through the gateway's Kubernetes client (in a cluster, or from
//! `KUBECONFIG` outside one) each time it is needed, so a rotated Secret is picked up.

use base64::Engine;
use kube::api::{Api, ApiResource, DynamicObject};
use portico::Secret;

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
