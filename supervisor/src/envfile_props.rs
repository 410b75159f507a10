//! Property tests of the `.env` encoder and merger against the models of both Node
//! parsers (`node_parse`): for arbitrary keys and values — quotes, newlines, `#`, `$`,
//! backslashes, unicode — an accepted value reads back exactly, a refused one is one
//! that no encoding holds, and a merge keeps every other line and every other key.
//! Case counts: `PROPTEST_CASES` (default below) per property.

use super::*;
use proptest::prelude::*;

/// Lines after the entry under test holding every quote character, so that a value
/// opening a quote it never closes is caught (a later quote would close it).
const QUOTED_AFTER: &str = "C=\"q\"\nD='q'\nE=`q`\n";

/// Cases per property unless `PROPTEST_CASES` says otherwise.
const CASES: u32 = 2000;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(CASES);
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

/// Characters that matter to the parsers, mixed with anything at all.
fn tricky_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => prop::sample::select(vec!['\'', '"', '`', '\n', '\r', '#', '$', '\\', '{', '}', ' ', '\t', '=', 'n', 'a', 'Z', '_', ':', '-', 'é', '😀', '日', '\0']),
        1 => any::<char>(),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop::collection::vec(tricky_char(), 0..24).prop_map(|c| c.into_iter().collect())
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![prop::sample::select(vec!["A", "B", "K", "VITE_X", "_u", "DB_URL"]).prop_map(str::to_string), "[A-Za-z_][A-Za-z0-9_]{0,8}"]
}

/// What Vite reads for each key per the model of `flavor` (the last entry wins),
/// after its final `\$` → `$` step.
fn read_all(text: &str, flavor: Flavor) -> HashMap<String, String> {
    node_parse(text, flavor).into_iter().collect()
}

/// A line an operator may have written by hand (sane ones: both parsers agree on them).
fn sane_line() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("\n".to_string()),
        "# [ -~]{0,20}\n",
        ("[A-Z_]{1,6}", "[A-Za-z0-9_./:]{0,12}").prop_map(|(k, v)| format!("{k}={v}\n")),
        ("[A-Z_]{1,6}", "[A-Za-z0-9 ]{0,12}").prop_map(|(k, v)| format!("export {k}='{v}'\n")),
        ("[A-Z_]{1,6}", "[a-z]{1,6}").prop_map(|(k, v)| format!("{k} = {v} # note\n")),
        (key(), value()).prop_filter_map("unrepresentable", |(k, v)| encode_value(&v).ok().map(|e| format!("{k}={e}\n"))),
    ]
}

/// Any line at all, including ones that confuse one parser or the other.
fn wild_line() -> impl Strategy<Value = String> {
    prop_oneof![3 => sane_line(), 1 => value().prop_map(|v| format!("{v}\n")), 1 => (key(), value()).prop_map(|(k, v)| format!("{k}={v}\n"))]
}

/// The pieces of `existing` that are not entries of `touched` keys, in order.
fn kept_pieces(existing: &str, touched: &HashSet<&str>) -> Vec<String> {
    let mut pieces = vec![];
    let mut from = 0;
    for e in segment(existing) {
        if touched.contains(e.key.as_str()) {
            pieces.push(existing[from..e.start].to_string());
            from = e.end;
        }
    }
    pieces.push(existing[from..].to_string());
    pieces.into_iter().filter(|p| !p.is_empty()).collect()
}

/// Checks a merge result: set keys exact, unset keys gone, other keys unchanged in both
/// parsers, and every untouched piece of the old file present, in order.
fn check_merged(existing: &str, set: &[(String, String)], unset: &[String], merged: &str) -> Result<(), TestCaseError> {
    for flavor in [Flavor::Node20, Flavor::Node22] {
        let before = read_all(existing, flavor);
        let after = read_all(merged, flavor);
        for (k, v) in set {
            prop_assert_eq!(after.get(k).map(|r| r.replace("\\$", "$")), Some(v.clone()), "{:?}: {} in {:?}", flavor, k, merged);
        }
        for k in unset {
            prop_assert!(!after.contains_key(k), "{:?}: {} still in {:?}", flavor, k, merged);
        }
        for (k, v) in &before {
            let touched = set.iter().any(|(s, _)| s == k) || unset.contains(k);
            if !touched && validate_key(k).is_ok() {
                prop_assert_eq!(after.get(k), Some(v), "{:?}: other key {} changed in {:?}", flavor, k, merged);
            }
        }
    }
    let touched: HashSet<&str> = set.iter().map(|(k, _)| k.as_str()).chain(unset.iter().map(String::as_str)).collect();
    let mut at = 0;
    // Line by line: new keys may go in before trailing lines (see `merge`).
    for piece in kept_pieces(existing, &touched) {
        for line in piece.split_inclusive('\n') {
            match merged[at..].find(line) {
                Some(p) => at += p + line.len(),
                None => return Err(TestCaseError::fail(format!("kept line {line:?} missing from {merged:?}"))),
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(config())]

    /// An accepted value reads back exactly in both parsers, between other lines; a
    /// refused one holds a NUL, or is one that no quoting reads back exactly.
    #[test]
    fn encode_round_trips_or_refuses(v in value()) {
        match encode_value(&v) {
            Ok(enc) => {
                let text = format!("# before\nA=1\nK={enc}\nB=2\n{QUOTED_AFTER}");
                for flavor in [Flavor::Node20, Flavor::Node22] {
                    let m = read_all(&text, flavor);
                    let raw = m.get("K").cloned();
                    prop_assert_eq!(raw.as_deref().map(|r| r.replace("\\$", "$")), Some(v.clone()), "{:?} {:?}", flavor, text);
                    prop_assert!(!expands(raw.as_deref().unwrap_or("")), "Vite would expand {:?}", raw);
                    prop_assert_eq!(m.get("A").map(String::as_str), Some("1"));
                    prop_assert_eq!(m.get("B").map(String::as_str), Some("2"));
                    prop_assert_eq!(m.len(), 6, "{:?}: the value made or ate keys: {:?}", flavor, m);
                }
                prop_assert_eq!(values(&text).into_iter().find(|(k, _)| k == "K").map(|(_, v)| v), Some(v.clone()));
            }
            Err(e) => {
                prop_assert_eq!(e.key(), "");
                match e.code() {
                    "invalid_value" => prop_assert!(v.contains('\0')),
                    "unrepresentable_value" => {
                        // Refused only when no quoting at all reads back exactly.
                        let raw = escape_dollars(&v);
                        for cand in [format!("'{raw}'"), format!("`{raw}`"), format!("\"{raw}\""), raw.clone()] {
                            let text = format!("# before\nA=1\nK={cand}\nB=2\n{QUOTED_AFTER}");
                            let exact = [Flavor::Node20, Flavor::Node22].iter().all(|f| {
                                let m = read_all(&text, *f);
                                m.get("K") == Some(&raw) && m.get("B").map(String::as_str) == Some("2") && m.len() == 6
                            });
                            prop_assert!(!exact, "refused {:?}, but K={} reads back exactly", v, cand);
                        }
                    }
                    other => prop_assert!(false, "unexpected code {}", other),
                }
            }
        }
    }

    /// Merging into a sane file succeeds whenever every value is representable, and the
    /// result is exact; a refusal names one of the request's keys and never its value.
    #[test]
    fn merge_into_sane_files(lines in prop::collection::vec(sane_line(), 0..12), set in prop::collection::vec((key(), value()), 0..6), unset in prop::collection::vec(key(), 0..3)) {
        let existing: String = lines.concat();
        let r = merge(&existing, &set, &unset);
        let dup = {
            let mut seen = HashSet::new();
            set.iter().any(|(k, _)| !seen.insert(k)) || unset.iter().any(|k| seen.contains(k))
        };
        let bad_value = set.iter().any(|(_, v)| encode_value(v).is_err());
        match r {
            Ok(merged) => {
                prop_assert!(!dup && !bad_value);
                check_merged(&existing, &set, &unset, &merged)?;
            }
            Err(e) => {
                prop_assert!(dup || bad_value || e.code() == "env_file_conflict", "{:?} for {:?}", e, existing);
                let named = set.iter().any(|(k, _)| k == e.key()) || unset.iter().any(|k| k == e.key()) || keys(&existing).iter().any(|k| k == e.key());
                prop_assert!(named, "error names {:?}", e.key());
                for (_, v) in &set {
                    if v.chars().count() > 6 {
                        prop_assert!(!e.to_string().contains(v.as_str()), "the value leaked into {}", e);
                    }
                }
            }
        }
    }

    /// With any existing file at all, a merge that is not refused is exact.
    #[test]
    fn merge_into_any_file_is_exact_or_refused(lines in prop::collection::vec(wild_line(), 0..10), set in prop::collection::vec((key(), value()), 0..5), unset in prop::collection::vec(key(), 0..3)) {
        let existing: String = lines.concat();
        if let Ok(merged) = merge(&existing, &set, &unset) {
            check_merged(&existing, &set, &unset, &merged)?;
        }
    }

    /// Invalid keys are refused, named, and nothing is produced.
    #[test]
    fn invalid_keys_are_refused(k in "\\PC{0,10}", v in value()) {
        let valid = validate_key(&k).is_ok();
        match merge("A=1\n", &[(k.clone(), v.clone())], &[]) {
            Err(e) if !valid => {
                prop_assert_eq!(e.code(), "invalid_key");
                prop_assert_eq!(e.key(), k.as_str());
            }
            Err(e) => prop_assert!(e.code() != "invalid_key"),
            Ok(_) => prop_assert!(valid),
        }
    }
}
