//! Running a gateway inside a cluster: which Gateway and ConfigMap (from the environment), the Kubernetes client (in-cluster config or `KUBECONFIG`), and the Gateway's
//! spec read from the API server. The runtime then follows the ConfigMap
//! ([`crate::source::configmap`]) and writes status through [`crate::kube_status`].

use kube::api::DynamicObject;
use kube::{Api, Client};

use crate::env;
use crate::kube_status::GatewayRef;
use crate::source::configmap::ConfigMapRef;
use crate::spec::{Gateway, GatewayGroup, status_of};

/// The gateway a process runs in a cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClusterTarget {
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
    pub(crate) fn from_env() -> Option<ClusterTarget> {
        Some(ClusterTarget {
            namespace: env::var(env::GATEWAY_NAMESPACE)?,
            gateway: env::var(env::GATEWAY_NAME)?,
            config_map: env::var(env::GATEWAY_PROCESSOR_CONFIG_MAP)?,
        })
    }
}

/// A gateway connected to its cluster.
#[derive(Clone)]
pub(crate) struct Connected {
    /// The client.
    pub client: Client,
    /// The configuration the client was made from (server, credentials, namespace).
    pub config: kube::Config,
    /// The Gateway as read from the API server.
    pub gateway: Gateway,
    /// Where its status goes.
    pub status: GatewayRef,
    /// Its ConfigMap.
    pub config_map: ConfigMapRef,
}

/// Why a gateway cannot reach its cluster.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClusterError {
    /// No Kubernetes client could be configured.
    #[error(
        "cannot configure a Kubernetes client: {0} (run in a pod with a service account, or set KUBECONFIG)"
    )]
    Client(#[source] kube::Error),
    /// The Gateway cannot be read.
    #[error("cannot read Gateway `{name}` in namespace `{namespace}`: {source}")]
    Gateway {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What the API server said.
        source: kube::Error,
    },
    /// There is no such Gateway in either group.
    #[error(
        "there is no Gateway `{name}` in namespace `{namespace}` (neither portico.dev/v1alpha1 nor argoproj.io/v1alpha1)"
    )]
    NotFound {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The Gateway's spec is not valid.
    #[error("Gateway `{name}` in namespace `{namespace}`: spec: {source}")]
    Spec {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// What is wrong.
        source: serde_json::Error,
    },
}

/// A Kubernetes client and its configuration: `KUBECONFIG` (or `~/.kube/config`) when there is
/// one, else the pod's in-cluster configuration.
pub(crate) async fn client() -> Result<(Client, kube::Config), ClusterError> {
    let config = kube::Config::infer()
        .await
        .map_err(|e| ClusterError::Client(kube::Error::InferConfig(e)))?;
    let client = Client::try_from(config.clone()).map_err(ClusterError::Client)?;
    Ok((client, config))
}

/// Connects and reads the Gateway `target` names.
pub(crate) async fn connect(target: &ClusterTarget) -> Result<Connected, ClusterError> {
    let (client, config) = client().await?;
    connect_with(client, config, target).await
}

/// [`connect`] with a given client.
async fn connect_with(
    client: Client,
    config: kube::Config,
    target: &ClusterTarget,
) -> Result<Connected, ClusterError> {
    // `portico.dev` first; a Gateway kept from Argo Events is in `argoproj.io`.
    let mut found = None;
    for group in GatewayGroup::ALL {
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &target.namespace, &group.api_resource());
        let gateway_error = |source| ClusterError::Gateway {
            namespace: target.namespace.clone(),
            name: target.gateway.clone(),
            source,
        };
        match api.get_opt(&target.gateway).await {
            Ok(Some(object)) => {
                found = Some((group, object));
                break;
            }
            Ok(None) => {}
            // The group is not served (its CRD is not installed): look in the other.
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(gateway_error(e)),
        }
    }
    let Some((group, resource)) = found else {
        return Err(ClusterError::NotFound {
            namespace: target.namespace.clone(),
            name: target.gateway.clone(),
        });
    };
    let mut gateway =
        Gateway::from_object(group, &resource).map_err(|source| ClusterError::Spec {
            namespace: target.namespace.clone(),
            name: target.gateway.clone(),
            source,
        })?;
    gateway.metadata.namespace = Some(target.namespace.clone());
    let replica = crate::env::replica();
    Ok(Connected {
        client,
        config,
        status: GatewayRef {
            group,
            namespace: target.namespace.clone(),
            name: target.gateway.clone(),
            uid: resource.metadata.uid.clone(),
            // Nodes an earlier run of this replica left (or a run before replicas wrote their
            // names); another replica's nodes are its own to remove.
            previous_nodes: status_of(&resource)
                .nodes
                .into_iter()
                .filter(|(_, n)| n.replica.as_ref().is_none_or(|r| *r == replica))
                .map(|(id, _)| id)
                .collect(),
            replica,
        },
        config_map: ConfigMapRef {
            namespace: target.namespace.clone(),
            name: target.config_map.clone(),
        },
        gateway,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::executor::GatewayConfig;
    use fake_kube::FakeKube;
    use serde_json::json;

    #[tokio::test]
    async fn a_connected_gateway_has_its_client_configuration() {
        let fake = FakeKube::start().await;
        fake.create(json!({
            "apiVersion": "portico.dev/v1alpha1", "kind": "Gateway",
            "metadata": {"name": "g", "namespace": "ns"},
            "spec": {"type": "calendar", "configMap": "g-cm"},
        }));
        let config = kube::Config::new(fake.url().parse().unwrap());
        let client = Client::try_from(config.clone()).unwrap();
        let target = ClusterTarget {
            namespace: "ns".into(),
            gateway: "g".into(),
            config_map: "g-cm".into(),
        };
        let c = connect_with(client.clone(), config.clone(), &target)
            .await
            .unwrap();
        assert_eq!(c.gateway.spec.gateway_type, "calendar");
        assert_eq!(c.status.group, GatewayGroup::Portico);

        // A Gateway kept from Argo Events v0.6 is found in its own group, and its watchers
        // default to v0.6's encoding.
        fake.create(json!({
            "apiVersion": "argoproj.io/v1alpha1", "kind": "Gateway",
            "metadata": {"name": "old", "namespace": "ns"},
            "spec": {"type": "webhook", "configMap": "old-cm", "imageVersion": "latest",
                "dispatchMechanism": "HTTP", "watchers": {"sensors": [{"name": "s"}]}},
        }));
        let old = ClusterTarget {
            gateway: "old".into(),
            ..target.clone()
        };
        let c_old = connect_with(client.clone(), config.clone(), &old)
            .await
            .unwrap();
        assert_eq!(c_old.status.group, GatewayGroup::Argo);
        assert_eq!(c_old.gateway.group(), GatewayGroup::Argo);
        let missing = ClusterTarget {
            gateway: "nowhere".into(),
            ..target.clone()
        };
        let e = connect_with(client, config, &missing)
            .await
            .err()
            .expect("no such Gateway")
            .to_string();
        assert!(e.contains("no Gateway `nowhere`"), "{e}");
        // What the core SDK hands an executor: the client and its configuration.
        let metrics = crate::metrics::Metrics::new();
        let pipeline = crate::pipeline::Pipeline::new(
            crate::pipeline::Transformer::new("g", "calendar", "1.0"),
            crate::dispatch::Dispatcher::start(Vec::new(), &metrics),
            metrics,
        );
        let gateway = GatewayConfig::new("g", "ns", pipeline)
            .with_kube_client(c.client.clone())
            .with_kube_config(c.config.clone());
        assert!(gateway.kube_client().is_some());
        assert_eq!(
            gateway.kube_config().unwrap().cluster_url.to_string(),
            format!("{}/", fake.url())
        );
    }
}
