//! Round trip through Vite's own `loadEnv`: what `envfile::merge` writes, Vite reads
//! back exactly.
//!
//! Needs `node` (or `$NODE_BIN`) and a Vite 8 package: `$VITE_PKG_DIR`, else
//! `<repo>/app-template/node_modules/vite`. Without them these tests fail, unless
//! `SKIP_NODE_ROUNDTRIP=1`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use supervisor::envfile::{keys, merge, values, write_atomic};

type Env = BTreeMap<String, String>;

/// The Vite package to test against, or `None` when the tests are told to skip.
fn vite_dir() -> Option<PathBuf> {
    if std::env::var("SKIP_NODE_ROUNDTRIP").as_deref() == Ok("1") {
        eprintln!("SKIP_NODE_ROUNDTRIP=1: not checking against Vite's loadEnv");
        return None;
    }
    let dir = match std::env::var_os("VITE_PKG_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../app-template/node_modules/vite"),
    };
    assert!(
        dir.join("package.json").is_file(),
        "no Vite package at {}: run `npm ci` in app-template/, or point VITE_PKG_DIR at a \
         node_modules/vite directory, or set SKIP_NODE_ROUNDTRIP=1 to skip this check",
        dir.display()
    );
    Some(dir)
}

/// What Vite's `loadEnv('development', dir, '')` returns for each directory.
fn load_with_vite(vite: &Path, dirs: &[&Path]) -> Vec<Env> {
    let node = std::env::var("NODE_BIN").unwrap_or_else(|_| "node".into());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/envfile_node/roundtrip.mjs");
    let out = Command::new(&node)
        .arg(&script)
        .arg("--vite")
        .arg(vite)
        .args(dirs)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {node:?} (set NODE_BIN, or SKIP_NODE_ROUNDTRIP=1): {e}")
        });
    assert!(
        out.status.success(),
        "roundtrip.mjs failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    let maps: Vec<Env> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(maps.len(), dirs.len(), "output: {stdout}");
    maps
}

fn write_env(dir: &Path, text: &str) {
    write_atomic(&dir.join(".env"), text, None).unwrap();
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const EXISTING: &str = "\
# app settings, edited by hand
VITE_KEEP=keep me # trailing comment
export OTHER_KEEP='  spaced  '

MULTI=\"line one
line two\"
TO_UNSET=gone
TO_REPLACE=old
# the end
";

const TRICKY: &[(&str, &str)] = &[
    ("SQ", "it's"),
    ("DQ", "say \"hi\""),
    ("BT", "run `cmd`"),
    ("SQ_DQ", "'\"both\"'"),
    ("SQ_BT", "'`"),
    ("DQ_BT", "\"`"),
    ("SQ_DQ_NL", "it's \"x\"\nnext"),
    ("SQ_BT_NL", "it's `x`\nnext"),
    ("DQ_BT_NL", "\"x\" `y`\nnext"),
    ("ALL_THREE", "a'b\"c`d"),
    ("ALL_THREE_SPACED", "x ' \" ` y $Z"),
    ("HASH", "#not-a-comment"),
    ("HASH_MID", "a # b"),
    ("DOLLAR_HOME", "$HOME"),
    ("DOLLAR_BRACE", "${X}"),
    ("DOLLAR_DEFAULT", "${X:-d} ${HOME:+y}"),
    ("ESCAPED_DOLLAR", "\\$HOME \\${X}"),
    ("DOLLARS", "$$ $ $1 a$"),
    ("REF_EXISTING", "$VITE_KEEP ${VITE_KEEP}"),
    ("BACKSLASHES", "C:\\path\\to\\"),
    ("TRAILING_BACKSLASH", "ends\\"),
    ("BACKSLASH_N", "\\n"),
    ("BACKSLASH_N_AND_QUOTES", "x'\\n\"`"),
    ("PADDED", "  padded  "),
    ("ONLY_SPACE", " "),
    ("TABS", "\tx\ty\t"),
    ("UNICODE", "héllo wörld ✓ 😀 日本語"),
    ("EMPTY", ""),
    ("EQUALS", "a=b==c="),
    ("ENDS_SQ", "value'"),
    ("ENDS_DQ", "value\""),
    ("ENDS_BT", "value`"),
    ("NEWLINES", "\nline1\n\nline2\n"),
    ("INJECT", "x\nINJECTED=1"),
    ("INJECT_QUOTED", "'\nINJECTED2='yes"),
    ("JSON", "{\"a\":[1,2],\"b\":\"c\"}"),
    ("URL", "https://user:p%40ss@host:5432/db?x=1&y=2#frag"),
    ("EXPORT_LIKE", "export X=1"),
    ("TO_REPLACE", "new\nvalue with 'quote'"),
    ("MULTI", "now\nthree\nlines"),
];

#[test]
fn vite_reads_back_exactly_what_was_merged() {
    let Some(vite) = vite_dir() else { return };
    let dir = tempfile::tempdir().unwrap();

    // Round 1: into a hand-written file.
    let merged = merge(EXISTING, &pairs(TRICKY), &["TO_UNSET".to_string()]).unwrap();
    for line in [
        "# app settings, edited by hand\n",
        "VITE_KEEP=keep me # trailing comment\n",
        "\n# the end\n",
    ] {
        assert!(
            merged.contains(line),
            "line {line:?} kept byte for byte in {merged:?}"
        );
    }
    write_env(dir.path(), &merged);
    let mut want: Env = pairs(TRICKY).into_iter().collect();
    want.insert("VITE_KEEP".into(), "keep me".into());
    want.insert("OTHER_KEEP".into(), "  spaced  ".into());
    let got = load_with_vite(&vite, &[dir.path()]).remove(0);
    assert_eq!(got, want, "file was:\n{merged}");
    assert_eq!(
        values(&merged).into_iter().collect::<Env>(),
        want,
        "envfile::values agrees with Vite"
    );
    let listed = keys(&merged);
    assert_eq!(listed.len(), want.len(), "{listed:?}");
    assert!(listed.iter().all(|k| want.contains_key(k)), "{listed:?}");

    // Round 2: replace our own (multi-line) entries and unset some.
    let again: Vec<(&str, &str)> = TRICKY
        .iter()
        .map(|&(k, _)| (k, "second"))
        .take(12)
        .collect();
    let gone = [
        "NEWLINES".to_string(),
        "INJECT".to_string(),
        "VITE_KEEP".to_string(),
    ];
    let merged2 = merge(&merged, &pairs(&again), &gone).unwrap();
    write_env(dir.path(), &merged2);
    for (k, v) in &again {
        want.insert(k.to_string(), v.to_string());
    }
    for k in &gone {
        want.remove(k);
    }
    let got = load_with_vite(&vite, &[dir.path()]).remove(0);
    assert_eq!(got, want, "file was:\n{merged2}");
}

#[test]
fn unrepresentable_values_are_refused_and_really_are() {
    // Why these can't be written (see envfile.rs): Node deletes every `\r` of the file
    // before parsing; a quoted value ends at the first repeat of its quote character
    // and has no escapes (so a value holding all of ' " ` can't be quoted, and `\n`
    // would turn into a newline inside "…" anyway); an unquoted value ends at the first
    // newline or `#` and loses surrounding blanks. So "a'b\"c`d\ne" fits no form.
    let refused = ["a'b\"c`d\ne", "a\rb", "a'\"` # b"];
    for value in refused {
        let err = merge("A=1\n", &pairs(&[("K", value)]), &[]).unwrap_err();
        assert_eq!((err.code(), err.key()), ("unrepresentable_value", "K"));
    }

    // Confirm with Vite: none of the plausible spellings reads back as the value.
    let Some(vite) = vite_dir() else { return };
    let root = tempfile::tempdir().unwrap();
    let mut dirs = Vec::new();
    for (i, value) in refused.iter().enumerate() {
        let escaped = |quote: char| {
            value
                .replace('\\', "\\\\")
                .replace(quote, &format!("\\{quote}"))
        };
        let spellings = [
            format!("'{value}'"),
            format!("\"{value}\""),
            format!("`{value}`"),
            value.to_string(),
            format!("'{}'", escaped('\'')),
            format!(
                "\"{}\"",
                escaped('"').replace('\n', "\\n").replace('\r', "\\r")
            ),
            format!("`{}`", escaped('`')),
            value.replace('\n', "\\n").replace('\r', "\\r"),
        ];
        for spelling in spellings {
            let dir = root.path().join(format!("{i}-{}", dirs.len()));
            std::fs::create_dir(&dir).unwrap();
            std::fs::write(dir.join(".env"), format!("K={spelling}\n")).unwrap();
            dirs.push((value, dir));
        }
    }
    let paths: Vec<&Path> = dirs.iter().map(|(_, d)| d.as_path()).collect();
    for ((value, dir), got) in dirs.iter().zip(load_with_vite(&vite, &paths)) {
        assert_ne!(
            got.get("K").map(String::as_str),
            Some(**value),
            "{dir:?} reads back {value:?}"
        );
    }
}
