//! envroll rolls out Deployments, StatefulSets and DaemonSets when a ConfigMap or Secret they
//! consume changes in a way the running process cannot see.

pub mod analysis;
pub mod cli;
pub mod controller;
pub mod debounce;
pub mod explain;
pub mod fingerprint;
pub mod hash;
pub mod impact;
pub mod leader;
pub mod lifecycle;
pub mod live;
pub mod live_impact;
pub mod manifests;
pub mod metrics;
pub mod migration;
pub mod notify;
pub mod policy;
pub mod rollout;
pub mod server;
pub mod status;
pub mod store;
pub mod telemetry;
#[cfg(test)]
mod test_support;
pub mod workload;
