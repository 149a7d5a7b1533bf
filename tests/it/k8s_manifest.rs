//! Issue 23 item 5: no Kubernetes runs here, so examples/batch/k8s-indexed-job.yaml is checked
//! by parsing it: an Indexed Job whose pods run `neural-style batch`, whose shard count
//! (NEURAL_STYLE_SHARD_COUNT, or --shard-count in the command) equals `completions`, and whose
//! command the program's own argument parser accepts.

use crate::common::{stderr, Env};
use serde_yaml_ng::Value;
use std::path::Path;

fn manifest() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/batch/k8s-indexed-job.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str().unwrap_or_else(|| panic!("{what} is not a string: {v:?}"))
}

/// What the manifest's checks need from it: (completions, parallelism, command, the shard count
/// from the container's environment).
fn job(m: &Value) -> (u64, u64, Vec<String>, Option<String>) {
    assert_eq!(m["apiVersion"], Value::from("batch/v1"));
    assert_eq!(m["kind"], Value::from("Job"));
    let spec = &m["spec"];
    assert_eq!(spec["completionMode"], Value::from("Indexed"), "JOB_COMPLETION_INDEX is set only in an Indexed Job");
    let completions = spec["completions"].as_u64().expect("spec.completions is a number");
    let parallelism = spec["parallelism"].as_u64().unwrap_or(1);
    let containers = spec["template"]["spec"]["containers"].as_sequence().expect("spec.template.spec.containers");
    assert_eq!(containers.len(), 1, "one container per pod");
    let c = &containers[0];
    let command: Vec<String> = c["command"].as_sequence().expect("the container's command").iter().map(|a| str_of(a, "a command argument").to_string()).collect();
    let env = c["env"].as_sequence().map(Vec::as_slice).unwrap_or_default();
    let count = env.iter().find(|e| e["name"] == Value::from("NEURAL_STYLE_SHARD_COUNT")).map(|e| str_of(&e["value"], "NEURAL_STYLE_SHARD_COUNT's value").to_string());
    (completions, parallelism, command, count)
}

#[test]
fn the_indexed_job_manifest_shards_its_command_over_completions() {
    let (completions, parallelism, command, count) = job(&manifest());
    assert!(completions >= 1 && parallelism >= 1 && parallelism <= completions, "completions {completions}, parallelism {parallelism}");
    assert_eq!(&command[..2], ["neural-style", "batch"], "{command:?}");
    assert!(!command.iter().any(|a| a == "--shard" || a.starts_with("--shard=")), "--shard would override JOB_COMPLETION_INDEX: {command:?}");
    let flag = command.iter().position(|a| a == "--shard-count").map(|i| command.get(i + 1).expect("--shard-count's value").clone());
    let shards: Vec<u64> = [flag, count].into_iter().flatten().map(|v| v.trim().parse().unwrap_or_else(|_| panic!("shard count {v:?} is not a number"))).collect();
    assert!(!shards.is_empty(), "no shard count: set NEURAL_STYLE_SHARD_COUNT (or --shard-count) to completions");
    assert!(shards.iter().all(|&s| s == completions), "shard count {shards:?} but completions {completions}: frames would be skipped or done twice");

    // The program's parser accepts the command: run as the last pod would be, it gets past the
    // options and stops at the first missing /data path (exit 1), not at a usage error (exit 2).
    let env = Env::new();
    let o = env
        .cmd()
        .args(&command[1..])
        .env("JOB_COMPLETION_INDEX", (completions - 1).to_string())
        .env("NEURAL_STYLE_SHARD_COUNT", completions.to_string())
        .env_remove("SLURM_ARRAY_TASK_ID")
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.lines().any(|l| l.starts_with("error:") && l.contains("/data/")), "expected a missing /data path: {err}");
}
