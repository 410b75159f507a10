//! Property test against the real thing: arbitrary values (quotes, newlines, `#`, `$`,
//! backslashes, unicode, odd whitespace) merged into an existing file are read back by
//! Vite 8's own `loadEnv` (Node's parser plus dotenv-expand) exactly as sent, and every
//! other key is kept; refused values are only ever refused, never written. One Node
//! process checks the whole batch (`CASES` files, or `PROPTEST_CASES`).
//!
//! Needs `node` and app-template's Vite, like `envfile_roundtrip.rs`; `SKIP_NODE_ROUNDTRIP=1` skips.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use supervisor::envfile::{merge, write_atomic};

const CASES: usize = 400;

const EXISTING: &str = "# kept\nKEEP_A=plain # comment\nexport KEEP_B='  spaced \"q\" '\nKEEP_C=\"two\nlines\"\nKEEP_D=`tick's`\n";

fn value() -> impl Strategy<Value = String> {
    let c = prop_oneof![
        4 => prop::sample::select(vec!['\'', '"', '`', '\n', '#', '$', '\\', '{', '}', ' ', '\t', '=', 'n', 'a', 'Z', '_', ':', 'é', '😀', '\u{b}', '\u{a0}']),
        1 => any::<char>().prop_filter("no NUL or CR", |c| *c != '\0' && *c != '\r'),
    ];
    prop::collection::vec(c, 0..20).prop_map(|v| v.into_iter().collect())
}

#[test]
fn merged_values_read_back_exactly_through_vites_load_env() {
    if std::env::var("SKIP_NODE_ROUNDTRIP").as_deref() == Ok("1") {
        eprintln!("SKIP_NODE_ROUNDTRIP=1: not checking against Vite's loadEnv");
        return;
    }
    let vite = Path::new(env!("CARGO_MANIFEST_DIR")).join("../app-template/node_modules/vite");
    assert!(vite.join("package.json").is_file(), "no Vite at {}: run scripts/setup.sh (or SKIP_NODE_ROUNDTRIP=1)", vite.display());
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(CASES);
    let root = tempfile::tempdir().unwrap();
    let mut runner = TestRunner::deterministic();
    let strategy = prop::collection::vec(value(), 1..4);
    let mut written = vec![];
    let mut refused = 0;
    for i in 0..cases {
        let values = strategy.new_tree(&mut runner).unwrap().current();
        let set: Vec<(String, String)> = values.iter().enumerate().map(|(j, v)| (format!("K{j}"), v.clone())).collect();
        // KEEP_A is overwritten half of the time, to replace an entry in place too.
        let mut set = set;
        if i % 2 == 1 {
            set.push(("KEEP_A".into(), values[0].clone()));
        }
        match merge(EXISTING, &set, &[]) {
            Ok(text) => {
                let dir = root.path().join(format!("c{i}"));
                std::fs::create_dir(&dir).unwrap();
                write_atomic(&dir.join(".env"), &text, None).unwrap();
                written.push((dir, set));
            }
            Err(e) => {
                assert_eq!(e.code(), "unrepresentable_value", "{e}");
                refused += 1;
            }
        }
    }
    let node = std::env::var("NODE_BIN").unwrap_or_else(|_| "node".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/envfile_node/roundtrip.mjs");
    let out = Command::new(&node).arg(&script).arg("--vite").arg(&vite).args(written.iter().map(|(d, _)| d)).output().expect("run node");
    assert!(out.status.success(), "roundtrip.mjs: {}", String::from_utf8_lossy(&out.stderr));
    let maps: Vec<BTreeMap<String, String>> = String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(maps.len(), written.len());
    for ((dir, set), got) in written.iter().zip(&maps) {
        let mut want: BTreeMap<String, String> =
            [("KEEP_A", "plain"), ("KEEP_B", "  spaced \"q\" "), ("KEEP_C", "two\nlines"), ("KEEP_D", "tick's")].iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        for (k, v) in set {
            want.insert(k.clone(), v.clone());
        }
        assert_eq!(got, &want, "{}:\n{}", dir.display(), std::fs::read_to_string(dir.join(".env")).unwrap());
    }
    println!("{} merged files read back exactly by Vite's loadEnv; {refused} requests refused as unrepresentable", written.len());
    assert!(written.len() > cases / 2, "most generated requests are representable");
}
