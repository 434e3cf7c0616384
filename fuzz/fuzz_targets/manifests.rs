//! Arbitrary text through the reader behind `envroll explain -f` and both renderers: bad input
//! must come back as a `ManifestError`, never as a panic, a hang or an unbounded allocation.

#![no_main]

use envroll::explain::{render_json, render_table};
use envroll::manifests::Manifests;
use envroll::migration;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // `explain -f` reads files with `read_to_string`, so only UTF-8 ever reaches the reader.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A NUL separates files, so sources read from one file meet workloads read from another, as
    // with `explain -f a.yaml -f b.yaml`.
    let mut manifests = Manifests::default();
    for (index, file_text) in text.split('\0').enumerate() {
        let file = format!("input-{index}.yaml");
        if let Err(error) = manifests.add_yaml(&file, file_text) {
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("{file}: ")),
                "an error must name its file: {message}"
            );
            return;
        }
    }
    let analyses = manifests.analyse();
    assert!(!render_table(&analyses).is_empty());
    let json: serde_json::Value =
        serde_json::from_str(&render_json(&analyses)).expect("render_json emits JSON");
    assert_eq!(
        json["workloads"].as_array().map(Vec::len),
        Some(analyses.len()),
        "one JSON entry per workload"
    );

    // `explain --reloader-annotations`: Reloader's annotations (regular expressions written by
    // users among them) through the analysis and the comparison with Reloader.
    let report = migration::compare_manifests(&manifests);
    assert_eq!(report.workloads.len(), analyses.len());
    let summary = &report.summary;
    assert_eq!(
        summary.identical
            + summary.fewer_rollouts
            + summary.more_rollouts
            + summary.fewer_and_more_rollouts,
        summary.workloads
    );
    assert!(migration::render_table(&report).ends_with(&format!("{}\n", summary.line)));
    let json: serde_json::Value = serde_json::from_str(&migration::render_json(&report))
        .expect("the migration report is JSON");
    assert_eq!(
        json["workloads"].as_array().map(Vec::len),
        Some(analyses.len())
    );
});
