//! The `azure-blob` gateway (being written).

use portico::{ConfigContext, ConfigError, ConfigExecutor};
use schemars::JsonSchema;
use serde::Deserialize;

/// An `azure-blob` configuration.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AzureBlobConfig {
    /// The container.
    pub container: String,
}

/// The `azure-blob` gateway's executor.
#[derive(Debug, Default, Clone, Copy)]
pub struct AzureBlob;

impl ConfigExecutor for AzureBlob {
    type Config = ();

    fn validate(&self, ctx: &ConfigContext) -> Result<(), ConfigError> {
        ctx.parse::<AzureBlobConfig>()?;
        Ok(())
    }

    async fn start_config(&self, _ctx: ConfigContext, _s: ()) -> Result<(), ConfigError> {
        Ok(())
    }
}
