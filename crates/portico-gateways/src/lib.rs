//! The built-in gateways of Portico. Each is one core-style [`portico::ConfigExecutor`],
//! written exactly the way a user writes theirs: read them as examples to copy.

pub mod calendar;
pub mod file;
pub mod github;
pub mod gitlab;
pub mod http_poll;
pub mod resource;
pub mod saas;
pub mod webhook;

pub mod amqp;
pub mod artifact;
mod aws;
mod azure;
pub mod azure_blob;
pub mod azure_queue;
mod broker;
pub mod kafka;
mod kube_secret;
mod listing;
pub mod mqtt;
pub mod nats;
pub mod postgres;
pub mod redis;
pub mod reference;
pub mod s3event;
pub mod sftp;
pub mod sns;
pub mod sqs;
pub mod storagegrid;

use std::sync::Arc;

use portico::SharedExecutor;

/// The types of the built-in gateways.
pub const BUILTIN_TYPES: &[&str] = &[
    "calendar",
    "webhook",
    "github",
    "gitlab",
    "file",
    "resource",
    "amqp",
    "kafka",
    "mqtt",
    "nats",
    "postgres",
    "redis",
    "artifact",
    "storagegrid",
    "sqs",
    "slack",
    "stripe",
    "bitbucket",
    "gerrit",
    "http-poll",
    "sftp",
    "azure-queue",
    "azure-blob",
    "sns",
];

/// The executor of built-in gateway `gateway_type`, if there is one. Each call gives a new
/// executor (the webhook-style ones own their servers by port).
pub fn builtin(gateway_type: &str) -> Option<SharedExecutor> {
    match gateway_type {
        "calendar" => Some(Arc::new(calendar::Calendar::default())),
        "webhook" => Some(Arc::new(webhook::Webhook::default())),
        "github" => Some(Arc::new(github::executor())),
        "gitlab" => Some(Arc::new(gitlab::executor())),
        "file" => Some(Arc::new(file::File)),
        "resource" => Some(Arc::new(resource::Resource::default())),
        "amqp" => Some(Arc::new(amqp::Amqp)),
        "kafka" => Some(Arc::new(kafka::Kafka)),
        "mqtt" => Some(Arc::new(mqtt::Mqtt)),
        "nats" => Some(Arc::new(nats::Nats)),
        "postgres" => Some(Arc::new(postgres::Postgres)),
        "redis" => Some(Arc::new(redis::Redis)),
        "artifact" => Some(Arc::new(artifact::Artifact)),
        "storagegrid" => Some(Arc::new(storagegrid::StorageGrid::default())),
        "sqs" => Some(Arc::new(sqs::Sqs)),
        "slack" => Some(Arc::new(saas::SaasHooks::new(saas::Provider::Slack))),
        "stripe" => Some(Arc::new(saas::SaasHooks::new(saas::Provider::Stripe))),
        "bitbucket" => Some(Arc::new(saas::SaasHooks::new(saas::Provider::Bitbucket))),
        "gerrit" => Some(Arc::new(saas::SaasHooks::new(saas::Provider::Gerrit))),
        "http-poll" => Some(Arc::new(http_poll::HttpPoll)),
        "sftp" => Some(Arc::new(sftp::Sftp)),
        "azure-queue" => Some(Arc::new(azure_queue::AzureQueue)),
        "azure-blob" => Some(Arc::new(azure_blob::AzureBlob)),
        "sns" => Some(Arc::new(sns::Sns::default())),
        _ => None,
    }
}
