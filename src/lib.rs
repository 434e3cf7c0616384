//! envroll rolls out Deployments, StatefulSets and DaemonSets when a ConfigMap or Secret they
//! consume changes in a way the running process cannot see.

pub mod analysis;
pub mod cli;
pub mod explain;
pub mod hash;
pub mod manifests;
pub mod policy;
pub mod workload;
