//! Inputs found by fuzzing the manifest reader (`make fuzz`), kept so the fixes stay fixed.

use envroll::manifests::Manifests;

fn load(text: &str) -> Result<Manifests, String> {
    let mut manifests = Manifests::default();
    manifests
        .add_yaml("bomb.yaml", text)
        .map_err(|e| e.to_string())?;
    Ok(manifests)
}

/// Nested aliases ("billion laughs"): 1.2 kB of YAML that expands to a million values. With
/// three more levels the same shape exhausts memory, so the reader must refuse the expansion,
/// not merely survive this size.
#[test]
fn nested_aliases_are_refused_before_they_expand() {
    const K: usize = 100;
    let text = format!(
        "kind: ConfigMap\nmetadata: {{name: bomb}}\na: &a [{}]\nb: &b [{}]\nc: [{}]\n",
        ["x"; K].join(","),
        ["*a"; K].join(","),
        ["*b"; K].join(","),
    );
    let error = load(&text).expect_err("an error");
    assert!(
        error.starts_with("bomb.yaml: document 1: YAML aliases expand the file to more than"),
        "{error}"
    );
}

#[test]
fn ordinary_anchors_and_aliases_still_work() {
    let text = r#"
kind: Deployment
metadata: {name: web, annotations: {envroll.dev/auto: "true"}}
spec:
  selector: {}
  template:
    spec:
      initContainers: [&app {name: app, envFrom: [{configMapRef: {name: env}}]}]
      containers: [*app, *app]
"#;
    let analyses = load(text).unwrap().analyse();
    assert_eq!(analyses[0].sources.len(), 1);
    assert!(analyses[0].sources[0].rollout);
}
