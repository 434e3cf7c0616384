//! One operator test's namespace and client, with the steps most tests take
//! on the Deployments in it.

use anyhow::Result;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client, ResourceExt};

use super::operator::{Operator, OperatorConfig};
use super::workloads::{
    assert_replicasets_stay, create, expect_one_rollout, wait_deployment_settled, wait_for_event,
    NO_ROLLOUT_WINDOW,
};
use super::TestNamespace;

/// The kind of the workloads [`Case`]'s steps look at, as Events name it.
pub const DEPLOYMENT: &str = "Deployment";

/// One test's namespace and client.
pub struct Case {
    pub client: Client,
    pub ns: TestNamespace,
}

impl Case {
    pub async fn new(prefix: &str) -> Result<Self> {
        let client = super::client().await?;
        let ns = TestNamespace::create(&client, prefix).await?;
        Ok(Case { client, ns })
    }

    pub fn ns(&self) -> &str {
        self.ns.name()
    }

    pub fn config_maps(&self) -> Api<ConfigMap> {
        self.ns.api()
    }

    pub fn secrets(&self) -> Api<Secret> {
        self.ns.api()
    }

    pub fn deployments(&self) -> Api<Deployment> {
        self.ns.api()
    }

    /// An operator scoped to this namespace, ready.
    pub async fn operator(&self) -> Result<Operator> {
        OperatorConfig::scoped(&[self.ns()]).start_ready().await
    }

    /// Creates a Deployment and waits for its first rollout (and envroll's
    /// baseline when it is managed).
    pub async fn deploy(&self, object: Deployment, managed: bool) -> Result<Deployment> {
        let name = object.name_any();
        create(&self.deployments(), &object).await?;
        wait_deployment_settled(&self.client, self.ns(), &name, managed).await
    }

    pub async fn expect_one_rollout(&self, deployment: &str, before: usize) -> Result<Deployment> {
        expect_one_rollout(&self.client, self.ns(), deployment, before).await
    }

    pub async fn expect_no_rollout(&self, deployment: &str, expected: usize) -> Result<()> {
        assert_replicasets_stay(
            &self.client,
            self.ns(),
            deployment,
            expected,
            NO_ROLLOUT_WINDOW,
        )
        .await
    }

    /// Waits for a `RolloutTriggered` Event on the Deployment whose note
    /// contains every part of `note`.
    pub async fn rollout_event(&self, deployment: &str, note: &[&str]) -> Result<()> {
        wait_for_event(
            &self.client,
            self.ns(),
            DEPLOYMENT,
            deployment,
            "RolloutTriggered",
            note,
        )
        .await
        .map(|_| ())
    }
}
