//! Running a gateway inside a cluster: which Gateway and ConfigMap (from the environment of
//! SPEC §3), the Kubernetes client (in-cluster config or `KUBECONFIG`), and the Gateway's
//! spec read from the API server. The runtime then follows the ConfigMap
//! ([`crate::source::configmap`]) and writes status through [`crate::kube_status`].

use kube::{Api, Client};

use crate::env;
use crate::kube_status::GatewayRef;
use crate::source::configmap::ConfigMapRef;
use crate::spec::{Gateway, GatewayResource};

/// The gateway a process runs in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTarget {
    /// `GATEWAY_NAMESPACE`.
    pub namespace: String,
    /// `GATEWAY_NAME`.
    pub gateway: String,
    /// `GATEWAY_PROCESSOR_CONFIG_MAP`.
    pub config_map: String,
}

impl ClusterTarget {
    /// The target the environment names, when `GATEWAY_NAMESPACE`, `GATEWAY_NAME` and
    /// `GATEWAY_PROCESSOR_CONFIG_MAP` are all set.
    pub fn from_env() -> Option<ClusterTarget> {
        Some(ClusterTarget {
            namespace: env::var(env::GATEWAY_NAMESPACE)?,
            gateway: env::var(env::GATEWAY_NAME)?,
            config_map: env::var(env::GATEWAY_PROCESSOR_CONFIG_MAP)?,
        })
    }
}

/// A gateway connected to its cluster.
#[derive(Clone)]
pub struct Connected {
    /// The client.
    pub client: Client,
    /// The Gateway as read from the API server.
    pub gateway: Gateway,
    /// Where its status goes.
    pub status: GatewayRef,
    /// Its ConfigMap.
    pub config_map: ConfigMapRef,
}

/// A Kubernetes client: `KUBECONFIG` (or `~/.kube/config`) when there is one, else the pod's
/// in-cluster configuration.
pub async fn client() -> Result<Client, String> {
    Client::try_default().await.map_err(|e| {
        format!(
            "cannot configure a Kubernetes client: {e} (run in a pod with a service account, or set KUBECONFIG)"
        )
    })
}

/// Connects and reads the Gateway `target` names.
pub async fn connect(target: &ClusterTarget) -> Result<Connected, String> {
    let client = client().await?;
    connect_with(client, target).await
}

/// [`connect`] with a given client.
pub async fn connect_with(client: Client, target: &ClusterTarget) -> Result<Connected, String> {
    let api: Api<GatewayResource> = Api::namespaced(client.clone(), &target.namespace);
    let resource = api.get(&target.gateway).await.map_err(|e| {
        format!(
            "cannot read Gateway `{}` in namespace `{}`: {e}",
            target.gateway, target.namespace
        )
    })?;
    let mut gateway = Gateway::from(&resource);
    gateway.metadata.namespace = Some(target.namespace.clone());
    Ok(Connected {
        client,
        status: GatewayRef {
            namespace: target.namespace.clone(),
            name: target.gateway.clone(),
            uid: resource.metadata.uid.clone(),
            previous_nodes: resource
                .status
                .as_ref()
                .map(|s| s.nodes.keys().cloned().collect())
                .unwrap_or_default(),
        },
        config_map: ConfigMapRef {
            namespace: target.namespace.clone(),
            name: target.config_map.clone(),
        },
        gateway,
    })
}
