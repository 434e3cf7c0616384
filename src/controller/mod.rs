//! The operator: watches feed plain bookkeeping (`store`), reconcile gathers what a decision
//! needs and applies what `rollout::decide` says.
//!
//! - `context`: the state shared by watches and reconciles, and how triggers reach reconciles;
//! - `sources`: the ConfigMap and Secret watches (no network I/O besides the watch itself);
//! - `workloads`: the Deployment, StatefulSet and DaemonSet watches and their controllers;
//! - `reconcile`: one workload's decision, from reading consumed Secrets to the patch;
//! - `report`: Events and warnings.

mod context;
mod reconcile;
mod report;
mod sources;
mod tracking;
mod workloads;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use kube::{Api, Client, Resource};
use tokio::sync::watch;
use tracing::info;

pub use context::Context;

use crate::analysis::AnnotationDialects;
use crate::debounce::Debounce;
use crate::lifecycle::Budget;

/// Small list pages keep the transient memory of an initial list low, whatever the object sizes.
const LIST_PAGE_SIZE: u32 = 100;

/// Where the operator looks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    Namespaces(Vec<String>),
}

impl Scope {
    /// `None` stands for every namespace.
    fn namespaces(&self) -> Vec<Option<String>> {
        match self {
            Scope::Cluster => vec![None],
            Scope::Namespaces(names) => names.iter().cloned().map(Some).collect(),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Scope::Cluster => "all namespaces (cluster-wide)".to_string(),
            Scope::Namespaces(names) => format!(
                "namespaces {} only; workloads and sources in any other namespace are ignored",
                names.join(", ")
            ),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Settings {
    pub scope: Scope,
    pub dry_run: bool,
    pub debounce: Debounce,
    pub concurrency: u16,
    /// Rollouts per workload and hour, unless the workload's annotation says otherwise.
    pub budget: Budget,
    /// Other tools' annotations honoured besides envroll's own (`--reloader-annotations`).
    pub dialects: AnnotationDialects,
}

/// Runs the operator until `shutdown` resolves. Sources are fully listed before any workload is
/// reconciled, so a restart never mistakes a not-yet-seen object for a missing one; the operator
/// is ready once the workload watches have listed too.
pub async fn run(context: Arc<Context>, shutdown: watch::Receiver<bool>) {
    let settings = context.settings().clone();
    info!(scope = %settings.scope.describe(), dry_run = settings.dry_run, "envroll watching");
    let namespaces = settings.scope.namespaces();
    let (source_tasks, sources_listed): (Vec<_>, Vec<_>) = namespaces
        .iter()
        .flat_map(|namespace| sources::spawn_watches(&context, namespace))
        .unzip();
    let mut stop = shutdown.clone();
    tokio::select! {
        _ = futures::future::join_all(sources_listed) => {}
        _ = stop.wait_for(|stop| *stop) => {
            info!("stopped before the initial list completed");
            source_tasks.iter().for_each(|task| task.abort());
            return;
        }
    }
    info!(
        sources = context.tracked_sources(),
        "initial list of ConfigMaps and Secrets complete; reconciling workloads"
    );
    let mut controllers = Vec::new();
    let mut workloads_listed = Vec::new();
    for namespace in &namespaces {
        for (controller, listed) in [
            workloads::spawn::<Deployment>(&context, namespace, &shutdown),
            workloads::spawn::<StatefulSet>(&context, namespace, &shutdown),
            workloads::spawn::<DaemonSet>(&context, namespace, &shutdown),
        ] {
            controllers.push(controller);
            workloads_listed.push(listed);
        }
    }
    let ready = context.clone();
    let readiness = tokio::spawn(async move {
        futures::future::join_all(workloads_listed).await;
        info!("initial list of workloads complete; ready");
        ready.metrics().set_ready(true);
    });
    futures::future::join_all(controllers).await;
    readiness.abort();
    for task in source_tasks {
        task.abort();
    }
}

fn api_for<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn termination() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {},
        _ = term.recv() => {},
    }
}

/// How long to wait before the `attempt`-th retry (from 1): doubling from `first`, capped.
fn backoff(first: Duration, cap: Duration, attempt: u32) -> Duration {
    first
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(cap)
}

#[cfg(test)]
mod tests;
