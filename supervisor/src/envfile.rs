//! The app's `.env` file: key validation, value encoding, merging and atomic writes.
//!
//! The file is read by Vite 8's `loadEnv` (`vite/dist/node/chunks/node.js`): it parses
//! with Node's own `util.parseEnv` (`src/node_dotenv.cc`), then runs a bundled copy of
//! dotenv-expand over every value. What that means for a value (checked against
//! Node 20.20, 22.23, 24.21 and 26.10):
//!
//! - every `\r` in the file is deleted before parsing, so a value can't hold one;
//! - a value that starts with `'`, `"` or `` ` `` runs to the next same quote
//!   character, across lines; nothing inside can be escaped, and the rest of the
//!   closing quote's line is ignored;
//! - inside `"…"` the two characters `\n` become a newline; `'…'` and `` `…` `` are
//!   taken verbatim;
//! - an unquoted value ends at the line end or at the first `#`, and loses
//!   surrounding spaces (and tabs, from Node 22 on);
//! - Vite then expands `$NAME` and `${…}` in every value, quoted or not, unless the `$`
//!   follows a `\`, and finally turns every `\$` into `$`.
//!
//! So [`encode_value`] puts `\` before every `$` (which the last step takes away
//! again, and which nothing else touches) and picks the first form that holds the
//! result: `'…'`, `` `…` ``, `"…"` (no `"` and no `\n` pair), else unquoted. A value
//! that none holds is refused. [`merge`] checks its output with models of both
//! Node parsers, so a set key reads back exactly or the merge is refused.

use std::collections::{HashMap, HashSet};
use std::fs::{File, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Why a key or value was refused. Every variant names the key and never the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    /// The key does not match `^[A-Za-z_][A-Za-z0-9_]*$`.
    #[error("invalid key {}: keys must match ^[A-Za-z_][A-Za-z0-9_]*$", shown(.key))]
    InvalidKey {
        /// The offending key.
        key: String,
    },
    /// The value holds a NUL character.
    #[error("invalid value for {key}: values must not contain NUL")]
    InvalidValue {
        /// The key whose value was refused.
        key: String,
    },
    /// No encoding lets Vite's `loadEnv` read the value back exactly.
    #[error(
        "the value of {key} cannot be written so that Vite reads it back exactly: it holds \
         a carriage return, or all three quote characters and also a newline, a `\\n` pair, \
         a `#`, a leading quote or surrounding whitespace"
    )]
    Unrepresentable {
        /// The key whose value was refused.
        key: String,
    },
    /// The key is named twice in one request (twice in `set`, or in `set` and `unset`).
    #[error("{key} is named more than once in the request")]
    DuplicateKey {
        /// The repeated key.
        key: String,
    },
    /// A line of the existing file (kept byte for byte) would make Node misread the key.
    #[error(
        "the existing env file has a line that makes Node misread {key}; fix the file by hand"
    )]
    FileConflict {
        /// The key that would be misread.
        key: String,
    },
}

impl EnvError {
    /// A stable machine-readable code for API error bodies.
    pub fn code(&self) -> &'static str {
        match self {
            EnvError::InvalidKey { .. } => "invalid_key",
            EnvError::InvalidValue { .. } => "invalid_value",
            EnvError::Unrepresentable { .. } => "unrepresentable_value",
            EnvError::DuplicateKey { .. } => "duplicate_key",
            EnvError::FileConflict { .. } => "env_file_conflict",
        }
    }

    /// The key the error is about (empty when [`encode_value`] was called without one).
    pub fn key(&self) -> &str {
        match self {
            EnvError::InvalidKey { key }
            | EnvError::InvalidValue { key }
            | EnvError::Unrepresentable { key }
            | EnvError::DuplicateKey { key }
            | EnvError::FileConflict { key } => key,
        }
    }

    fn for_key(self, key: &str) -> Self {
        let key = key.to_owned();
        match self {
            EnvError::InvalidKey { .. } => EnvError::InvalidKey { key },
            EnvError::InvalidValue { .. } => EnvError::InvalidValue { key },
            EnvError::Unrepresentable { .. } => EnvError::Unrepresentable { key },
            EnvError::DuplicateKey { .. } => EnvError::DuplicateKey { key },
            EnvError::FileConflict { .. } => EnvError::FileConflict { key },
        }
    }
}

/// An invalid key as shown in a message: escaped, and cut after 64 characters.
fn shown(key: &str) -> String {
    let mut s: String = key.chars().take(64).collect();
    if s.len() < key.len() {
        s.push('…');
    }
    format!("{s:?}")
}

/// Checks that `key` matches `^[A-Za-z_][A-Za-z0-9_]*$`.
pub fn validate_key(key: &str) -> Result<(), EnvError> {
    let mut bytes = key.bytes();
    let ok = matches!(bytes.next(), Some(b'A'..=b'Z' | b'a'..=b'z' | b'_'))
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(EnvError::InvalidKey {
            key: key.to_owned(),
        })
    }
}

/// Encodes a value as the text to write after `KEY=`, such that Vite's `loadEnv`
/// reads back exactly `value` (see the module docs for the rules). Errors carry an
/// empty key; [`merge`] fills in the real one.
pub fn encode_value(value: &str) -> Result<String, EnvError> {
    if value.contains('\0') {
        return Err(EnvError::InvalidValue { key: String::new() });
    }
    let unrepresentable = Err(EnvError::Unrepresentable { key: String::new() });
    if value.contains('\r') {
        return unrepresentable;
    }
    let raw = escape_dollars(value);
    for quote in ['\'', '`'] {
        if !raw.contains(quote) {
            return Ok(format!("{quote}{raw}{quote}"));
        }
    }
    if !raw.contains('"') && !raw.contains("\\n") {
        return Ok(format!("\"{raw}\""));
    }
    // Only reached when the value holds all three quote characters.
    let (Some(first), Some(last)) = (raw.chars().next(), raw.chars().last()) else {
        return unrepresentable;
    };
    // Node trims spaces (and, from 22 on, tabs) around a bare value, nothing else: a
    // leading vertical tab or no-break space is kept (checked with Node 24's parseEnv).
    let blank = |c: char| c == ' ' || c == '\t';
    let fits_unquoted = !raw.contains(['\n', '#'])
        && !matches!(first, '\'' | '"' | '`')
        && !blank(first)
        && !blank(last);
    if fits_unquoted {
        Ok(raw)
    } else {
        unrepresentable
    }
}

/// What Node's parser must return for a value, before Vite's expansion: each `$` behind
/// a `\`, so that no expansion matches and the final `\$` → `$` step restores it.
fn escape_dollars(value: &str) -> String {
    value.replace('$', "\\$")
}

/// Merges `set` and `unset` into the text of an existing env file and returns the new
/// text. Every line that is not an entry of a named key is kept byte for byte. A set
/// key's entry (all its lines, when its quoted value spans several) is replaced in
/// place by one entry, later entries of the same key are removed, unset keys' entries
/// are removed, and new keys are appended at the end in the order given (or, when
/// trailing lines would make Node 20 misread them, right after the last entry).
/// The result is checked with models of Node 20's and Node 22+'s parsers: every set
/// key must read back exactly, no unset key may remain, and no other key may read
/// differently than before, else [`EnvError::FileConflict`]. All or nothing: the
/// first bad key or value is returned as an error and nothing is produced.
pub fn merge(
    existing: &str,
    set: &[(String, String)],
    unset: &[String],
) -> Result<String, EnvError> {
    let mut lines: HashMap<&str, String> = HashMap::new();
    let mut expected: Vec<(&str, String)> = Vec::new();
    for (key, value) in set {
        validate_key(key)?;
        let encoded = encode_value(value).map_err(|e| e.for_key(key))?;
        if lines.insert(key, format!("{key}={encoded}\n")).is_some() {
            return Err(EnvError::DuplicateKey { key: key.clone() });
        }
        expected.push((key, escape_dollars(value)));
    }
    let mut removed: HashSet<&str> = HashSet::new();
    for key in unset {
        validate_key(key)?;
        if lines.contains_key(key.as_str()) {
            return Err(EnvError::DuplicateKey { key: key.clone() });
        }
        removed.insert(key);
    }

    let entries = segment(existing);
    let merged = splice(existing, &entries, set, &lines, &removed, existing.len());
    let verdict = check(existing, &merged, &expected, &removed);
    // Trailing lines that Node 20 would join to appended keys (an indented comment, a
    // line of spaces, a stray word): then try the new keys before them instead.
    let tail = entries.last().map_or(0, |e| e.end);
    match verdict {
        Err(conflict) if tail < existing.len() => {
            let merged = splice(existing, &entries, set, &lines, &removed, tail);
            check(existing, &merged, &expected, &removed).map_err(|_| conflict)?;
            Ok(merged)
        }
        _ => verdict.map(|()| merged),
    }
}

/// Builds the merged text: entries of set keys replaced (first) or dropped (later),
/// entries of removed keys dropped, keys not yet present inserted at `append_at`.
fn splice(
    existing: &str,
    entries: &[Entry],
    set: &[(String, String)],
    lines: &HashMap<&str, String>,
    removed: &HashSet<&str>,
    append_at: usize,
) -> String {
    let mut out =
        String::with_capacity(existing.len() + lines.values().map(String::len).sum::<usize>());
    let mut written: HashSet<&str> = HashSet::new();
    let mut kept_from = 0;
    for entry in entries {
        let replacement = match lines.get_key_value(entry.key.as_str()) {
            Some((key, line)) => written.insert(key).then_some(line.as_str()),
            None if removed.contains(entry.key.as_str()) => None,
            None => continue,
        };
        out.push_str(&existing[kept_from..entry.start]);
        out.push_str(replacement.unwrap_or(""));
        kept_from = entry.end;
    }
    let append_at = append_at.max(kept_from);
    out.push_str(&existing[kept_from..append_at]);
    for (key, _) in set {
        if !written.contains(key.as_str()) {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&lines[key.as_str()]);
        }
    }
    out.push_str(&existing[append_at..]);
    out
}

/// Checks `merged` with the models of both Node parsers: each set key reads as its
/// expected raw value, no removed key is read, and every other validly named key reads
/// as it did in `existing`. Names only valid keys, never a value.
fn check(
    existing: &str,
    merged: &str,
    expected: &[(&str, String)],
    removed: &HashSet<&str>,
) -> Result<(), EnvError> {
    let conflict = |key: &str| {
        Err(EnvError::FileConflict {
            key: key.to_owned(),
        })
    };
    let set_keys: HashSet<&str> = expected.iter().map(|(k, _)| *k).collect();
    for flavor in [Flavor::Node20, Flavor::Node22] {
        let after: HashMap<String, String> = node_parse(merged, flavor).into_iter().collect();
        for (key, raw) in expected {
            if after.get(*key) != Some(raw) {
                return conflict(key);
            }
        }
        if let Some(key) = removed.iter().find(|k| after.contains_key(**k)) {
            return conflict(key);
        }
        let before: HashMap<String, String> = node_parse(existing, flavor).into_iter().collect();
        for (key, value) in &before {
            let touched = removed.contains(key.as_str()) || set_keys.contains(key.as_str());
            if !touched && validate_key(key).is_ok() && after.get(key) != Some(value) {
                return conflict(key);
            }
        }
    }
    Ok(())
}

/// The validly named keys of the entries in an env file, in order of first
/// appearance, names only.
pub fn keys(existing: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    segment(existing)
        .into_iter()
        .filter(|e| validate_key(&e.key).is_ok() && seen.insert(e.key.clone()))
        .map(|e| e.key)
        .collect()
}

/// The variables the file defines as Vite's `loadEnv` reads them (Node 22+ parser),
/// for handing to services: validly named keys in order of first appearance, the last
/// entry of a key winning. A value that Vite would expand (an unescaped `$NAME` or
/// `${…}`, which only hand-written lines can hold, as [`merge`] escapes every `$`)
/// depends on the reader's environment, so it is left out for the reader to expand.
pub fn values(text: &str) -> Vec<(String, String)> {
    let mut order = Vec::new();
    let mut last: HashMap<String, String> = HashMap::new();
    for (key, raw) in node_parse(text, Flavor::Node22) {
        if validate_key(&key).is_ok() && last.insert(key.clone(), raw).is_none() {
            order.push(key);
        }
    }
    order
        .into_iter()
        .filter_map(|key| {
            let raw = last.remove(&key)?;
            (!expands(&raw)).then(|| (key, raw.replace("\\$", "$")))
        })
        .collect()
}

/// Whether Vite's expansion regex, `(?<!\\)\${([^{}]+)}|(?<!\\)\$([A-Za-z_][A-Za-z0-9_]*)`,
/// matches somewhere in `raw`.
fn expands(raw: &str) -> bool {
    let b = raw.as_bytes();
    (0..b.len()).any(|i| {
        if b[i] != b'$' || (i > 0 && b[i - 1] == b'\\') {
            return false;
        }
        match b.get(i + 1) {
            Some(b'{') => b[i + 2..]
                .iter()
                .position(|&c| c == b'{' || c == b'}')
                .is_some_and(|p| p > 0 && b[i + 2 + p] == b'}'),
            Some(c) => c.is_ascii_alphabetic() || *c == b'_',
            None => false,
        }
    })
}

/// Writes `contents` to `path` atomically (env files, the token, `ctl screenshot`'s image): a new temporary file (mode 0600) in the
/// same directory is written, fsynced, optionally `fchown`ed to `owner` (uid, gid),
/// renamed over `path`, and the directory is fsynced. Readers see the old file or the
/// new one, never a partial one; a failed write leaves no temporary file behind.
pub fn write_atomic(path: &Path, contents: impl AsRef<[u8]>, owner: Option<(u32, u32)>) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path has no file name",
        )
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    // Created with O_EXCL and mode 0600; removed on drop unless persisted.
    let mut file = tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .permissions(Permissions::from_mode(0o600))
        .tempfile_in(dir)?;
    file.write_all(contents.as_ref())?;
    // The umask may have cleared bits of 0600; the file must be exactly 0600.
    file.as_file().set_permissions(Permissions::from_mode(0o600))?;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::fchown(file.as_file(), Some(uid), Some(gid))?;
    }
    file.as_file().sync_all()?;
    file.persist(path).map_err(|e| e.error)?;
    File::open(dir)?.sync_all()
}

/// One entry of an env file: its key and its byte range (whole lines, with the
/// final newline) in the original text.
struct Entry {
    key: String,
    start: usize,
    end: usize,
}

/// The text with every `\r` removed (as Node does first), and for each remaining byte
/// its offset in the original, plus one past the end.
fn strip_cr(text: &str) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::with_capacity(text.len());
    let mut offsets = Vec::with_capacity(text.len() + 1);
    for (i, b) in text.bytes().enumerate() {
        if b != b'\r' {
            bytes.push(b);
            offsets.push(i);
        }
    }
    offsets.push(text.len());
    (bytes, offsets)
}

fn find(s: &[u8], from: usize, to: usize, c: u8) -> Option<usize> {
    s[from..to].iter().position(|&b| b == c).map(|p| p + from)
}

fn is_quote(b: u8) -> bool {
    matches!(b, b'\'' | b'"' | b'`')
}

/// Splits an env file into entries, the way both Node parsers agree on for sane files:
/// an entry is a line with a `=` whose first non-blank character is not `#`; if its
/// value (after spaces and tabs) starts with a quote character that occurs again later
/// in the file, it runs to the end of the line holding that closing quote.
fn segment(text: &str) -> Vec<Entry> {
    let (s, offsets) = strip_cr(text);
    let n = s.len();
    let mut entries = Vec::new();
    let mut i = 0;
    while i < n {
        let line_end = find(&s, i, n, b'\n').unwrap_or(n);
        let next = (line_end + 1).min(n);
        let line = &s[i..line_end];
        let first = line.iter().position(|&b| b != b' ' && b != b'\t');
        let eq = line.iter().position(|&b| b == b'=');
        let (Some(first), Some(eq)) = (first, eq) else {
            i = next;
            continue;
        };
        let mut key = trim(&line[..eq], b" \t");
        if let Some(rest) = key.strip_prefix(b"export ") {
            key = trim(rest, b" \t");
        }
        if line[first] == b'#' || key.is_empty() {
            i = next;
            continue;
        }
        let value_start = i
            + eq
            + 1
            + line[eq + 1..]
                .iter()
                .take_while(|&&b| b == b' ' || b == b'\t')
                .count();
        let mut end = next;
        if value_start < line_end && is_quote(s[value_start]) {
            if let Some(close) = find(&s, value_start + 1, n, s[value_start]) {
                end = find(&s, close, n, b'\n').map_or(n, |nl| nl + 1);
            }
        }
        entries.push(Entry {
            key: String::from_utf8_lossy(key).into_owned(),
            start: offsets[i],
            // Just past the newline in the original: a `\r` after it starts the next line.
            end: if end > 0 && s[end - 1] == b'\n' { offsets[end - 1] + 1 } else { offsets[end] },
        });
        i = end;
    }
    entries
}

fn trim<'a>(mut s: &'a [u8], set: &[u8]) -> &'a [u8] {
    while let [first, rest @ ..] = s {
        if !set.contains(first) {
            break;
        }
        s = rest;
    }
    while let [rest @ .., last] = s {
        if !set.contains(last) {
            break;
        }
        s = rest;
    }
    s
}

/// The two generations of Node's `.env` parser that Vite 8 can run on.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Flavor {
    /// Node 20.x: trims spaces only; a line without `=` swallows the next line's key;
    /// an empty key stops parsing.
    Node20,
    /// Node 22 and later: trims spaces, tabs and newlines; skips lines without `=`.
    Node22,
}

/// A line-for-line model of Node's `Dotenv::ParseContent` for `flavor`: the (key,
/// value) pairs in file order, values before Vite's `$` expansion.
fn node_parse(text: &str, flavor: Flavor) -> Vec<(String, String)> {
    let (s, _) = strip_cr(text);
    let blanks: &[u8] = match flavor {
        Flavor::Node20 => b" ",
        Flavor::Node22 => b" \t\n",
    };
    let trim_range = |mut lo: usize, mut hi: usize| {
        while lo < hi && blanks.contains(&s[lo]) {
            lo += 1;
        }
        while hi > lo && blanks.contains(&s[hi - 1]) {
            hi -= 1;
        }
        (lo, hi)
    };
    let text_of = |lo: usize, hi: usize| String::from_utf8_lossy(&s[lo..hi]).into_owned();
    let after_line = |from: usize, hi: usize| find(&s, from, hi, b'\n').map_or(hi, |nl| nl + 1);
    let mut out = Vec::new();
    let (mut lo, mut hi) = trim_range(0, s.len());
    while lo < hi {
        if s[lo] == b'\n' || s[lo] == b'#' {
            match find(&s, lo, hi, b'\n') {
                Some(nl) => {
                    lo = nl + 1;
                    continue;
                }
                None if flavor == Flavor::Node22 => break,
                None => {}
            }
        }
        let eq = match flavor {
            Flavor::Node20 => match find(&s, lo, hi, b'=') {
                Some(eq) => eq,
                None => {
                    lo = after_line(lo, hi);
                    continue;
                }
            },
            Flavor::Node22 => match s[lo..hi].iter().position(|&b| b == b'=' || b == b'\n') {
                None => break,
                Some(p) if s[lo + p] == b'\n' => {
                    (lo, hi) = trim_range(lo + p + 1, hi);
                    continue;
                }
                Some(p) => lo + p,
            },
        };
        let (key_lo, key_hi) = trim_range(lo, eq);
        let mut key = text_of(key_lo, key_hi);
        if flavor == Flavor::Node20 && lo < eq && key_lo == key_hi && lo > 0 && s[lo - 1] != b' ' {
            // Node 20's trim_spaces of an all-space key does remove_prefix(npos), which
            // leaves the one byte before the key: model that rather than stop early.
            key = text_of(lo - 1, lo);
        }
        lo = eq + 1;
        if flavor == Flavor::Node22 && (lo == hi || s[lo] == b'\n') {
            out.push((key, String::new()));
            continue;
        }
        (lo, hi) = trim_range(lo, hi);
        if key.is_empty() {
            match flavor {
                Flavor::Node20 => break,
                Flavor::Node22 => continue,
            }
        }
        if let Some(rest) = key.strip_prefix("export ") {
            key = match flavor {
                Flavor::Node20 => rest.to_owned(),
                Flavor::Node22 => {
                    String::from_utf8_lossy(trim(rest.as_bytes(), blanks)).into_owned()
                }
            };
        }
        if lo == hi {
            out.push((key, String::new()));
            break;
        }
        let quote = s[lo];
        if quote == b'"' {
            if let Some(close) = find(&s, lo + 1, hi, b'"') {
                out.push((key, text_of(lo + 1, close).replace("\\n", "\n")));
                lo = after_line(close, hi);
                continue;
            }
        }
        if is_quote(quote) {
            match (find(&s, lo + 1, hi, quote), find(&s, lo, hi, b'\n')) {
                (Some(close), _) => {
                    out.push((key, text_of(lo + 1, close)));
                    lo = after_line(close, hi);
                    continue;
                }
                (None, Some(nl)) => {
                    out.push((key, text_of(lo, nl)));
                    lo = nl + 1;
                }
                (None, None) if flavor == Flavor::Node22 => {
                    out.push((key, text_of(lo, hi)));
                    break;
                }
                (None, None) => {}
            }
        } else {
            let line_end = find(&s, lo, hi, b'\n').unwrap_or(hi);
            let value_end = find(&s, lo, line_end, b'#').unwrap_or(line_end);
            let (v_lo, v_hi) = trim_range(lo, value_end);
            out.push((key, text_of(v_lo, v_hi)));
            lo = after_line(lo, hi);
        }
        if flavor == Flavor::Node22 {
            (lo, hi) = trim_range(lo, hi);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn unset(keys: &[&str]) -> Vec<String> {
        keys.iter().map(|k| k.to_string()).collect()
    }

    /// What Vite reads for `key`, per the model of `flavor`, after the `\$` → `$` step
    /// (no expansion can match, as every `$` we write follows a `\`).
    fn read(text: &str, flavor: Flavor, key: &str) -> Option<String> {
        let map: HashMap<String, String> = node_parse(text, flavor).into_iter().collect();
        map.get(key).map(|v| v.replace("\\$", "$"))
    }

    #[test]
    fn keys_are_validated() {
        for ok in ["A", "_", "a_1", "VITE_API_URL", "_9"] {
            assert_eq!(validate_key(ok), Ok(()), "{ok}");
        }
        for bad in ["", "1A", "A-B", "A B", "A=B", "É", "A\n", "$A", "A.B"] {
            let err = validate_key(bad).unwrap_err();
            assert_eq!(err.code(), "invalid_key", "{bad:?}");
            assert_eq!(err.key(), bad);
        }
    }

    #[test]
    fn encoding_picks_the_first_quoting_that_holds_the_value() {
        let cases = [
            ("plain", "'plain'"),
            ("", "''"),
            ("it's", "`it's`"),
            ("it's `x`", "\"it's `x`\""),
            ("$HOME ${X} \\$", "'\\$HOME \\${X} \\\\$'"),
            ("a\nb # c", "'a\nb # c'"),
            ("a' \"b\" `c`", "a' \"b\" `c`"),
        ];
        for (value, encoded) in cases {
            assert_eq!(encode_value(value).as_deref(), Ok(encoded), "{value:?}");
        }
        // A `\n` pair forces single quotes or backticks: in "…" it would become a newline.
        assert_eq!(
            encode_value("'`\\n").map_err(|e| e.code()),
            Err("unrepresentable_value")
        );
    }

    #[test]
    fn values_no_encoding_holds_are_refused() {
        let refused = [
            "a\rb",       // Node deletes every \r of the file before parsing
            "'\"`\n",     // all quotes: only unquoted is left, which ends at a newline
            "' \" ` # x", // ... or at a #
            " '\"`",      // ... and loses surrounding blanks
            "'\"`\t",     // ... tabs too, from Node 22 on
            "'a\"`",      // ... and must not start with a quote (it would open one that
                          // only a later quote in the file could close)
        ];
        for value in refused {
            let err = encode_value(value).unwrap_err();
            assert_eq!(err.code(), "unrepresentable_value", "{value:?}");
        }
        assert_eq!(encode_value("a\0b").unwrap_err().code(), "invalid_value");
    }

    #[test]
    fn every_encoding_reads_back_exactly_in_both_parsers() {
        let values = [
            "plain",
            "",
            " lead",
            "trail ",
            "\ttab\t",
            "it's",
            "say \"hi\"",
            "`tick`",
            "'\"",
            "'`",
            "\"`",
            "a'b\"c`d",
            "x\ny",
            "\n",
            "# not a comment",
            "a#b",
            "$HOME",
            "${X}",
            "\\$",
            "$$",
            "a\\",
            "\\\\",
            "\\n",
            "C:\\new",
            "k=v=w",
            "é😀 ünïcødé",
            "ends with '",
            "ends with \"",
            "=",
            "a'\"`b $X",
        ];
        for value in values {
            let line = format!("K={}\n", encode_value(value).unwrap());
            let text = format!("# before\nA=1\n{line}B=2\n");
            for flavor in [Flavor::Node20, Flavor::Node22] {
                assert_eq!(
                    read(&text, flavor, "K").as_deref(),
                    Some(value),
                    "{flavor:?} {line:?}"
                );
                assert_eq!(
                    read(&text, flavor, "B").as_deref(),
                    Some("2"),
                    "{flavor:?} {line:?}"
                );
            }
        }
    }

    #[test]
    fn merge_keeps_every_other_line_byte_for_byte() {
        let existing =
            "# header comment\n\nA=1 # inline\nexport B = 'two'\r\n  \nC=\"c\"\n# trailer\n";
        let out = merge(existing, &set(&[("B", "new")]), &[]).unwrap();
        assert_eq!(
            out,
            "# header comment\n\nA=1 # inline\nB='new'\n  \nC=\"c\"\n# trailer\n"
        );
        let out = merge(existing, &set(&[("NEW", "v")]), &[]).unwrap();
        assert_eq!(out, format!("{existing}NEW='v'\n"));
        let out = merge("A=1", &set(&[("NEW", "v")]), &[]).unwrap();
        assert_eq!(out, "A=1\nNEW='v'\n");
        assert_eq!(merge("", &set(&[("K", "v")]), &[]).unwrap(), "K='v'\n");
    }

    #[test]
    fn merge_replaces_a_whole_multi_line_entry() {
        let existing = "A=1\nPEM=\"-----BEGIN-----\nabc\n-----END-----\" # c\nB=2\n";
        let out = merge(existing, &set(&[("PEM", "short")]), &[]).unwrap();
        assert_eq!(out, "A=1\nPEM='short'\nB=2\n");
        // And our own multi-line encodings are found again.
        let out = merge("A=1\n", &set(&[("M", "x\nY=1\n'z")]), &[]).unwrap();
        assert_eq!(out, "A=1\nM=`x\nY=1\n'z`\n");
        assert_eq!(keys(&out), ["A", "M"]);
        assert_eq!(
            merge(&out, &set(&[("M", "m")]), &[]).unwrap(),
            "A=1\nM='m'\n"
        );
        assert_eq!(merge(&out, &[], &unset(&["M"])).unwrap(), "A=1\n");
    }

    #[test]
    fn merge_unsets_and_collapses_duplicates() {
        let existing = "A=1\nB=2\nA=3\nC=4\n";
        assert_eq!(
            merge(existing, &[], &unset(&["A", "ABSENT"])).unwrap(),
            "B=2\nC=4\n"
        );
        assert_eq!(
            merge(existing, &set(&[("A", "x")]), &[]).unwrap(),
            "A='x'\nB=2\nC=4\n"
        );
        assert_eq!(
            merge(existing, &set(&[("D", "d"), ("A", "a")]), &unset(&["B"])).unwrap(),
            "A='a'\nC=4\nD='d'\n"
        );
    }

    #[test]
    fn merge_is_all_or_nothing() {
        let codes = |r: Result<String, EnvError>| r.map_err(|e| (e.code(), e.key().to_owned()));
        assert_eq!(
            codes(merge("", &set(&[("OK", "1"), ("1X", "2")]), &[])),
            Err(("invalid_key", "1X".into()))
        );
        assert_eq!(
            codes(merge("", &set(&[("OK", "1"), ("BAD", "\r")]), &[])),
            Err(("unrepresentable_value", "BAD".into()))
        );
        assert_eq!(
            codes(merge("", &set(&[("NUL", "\0")]), &[])),
            Err(("invalid_value", "NUL".into()))
        );
        assert_eq!(
            codes(merge("", &set(&[("K", "1"), ("K", "2")]), &[])),
            Err(("duplicate_key", "K".into()))
        );
        assert_eq!(
            codes(merge("", &set(&[("K", "1")]), &unset(&["K"]))),
            Err(("duplicate_key", "K".into()))
        );
        assert_eq!(
            codes(merge("", &[], &unset(&["no-pe"]))),
            Err(("invalid_key", "no-pe".into()))
        );
    }

    #[test]
    fn errors_never_contain_the_value() {
        let secret = "sk-SECRET-4242";
        let values = [
            format!("{secret}\0"),
            format!("{secret}\r"),
            format!("'\"`{secret}\n"),
        ];
        for value in &values {
            let err = merge("A=1\n", &set(&[("TOKEN", value)]), &[]).unwrap_err();
            assert!(
                !err.to_string().contains(secret) && !format!("{err:?}").contains(secret),
                "{err:?}"
            );
            assert!(err.to_string().contains("TOKEN"));
        }
        // A conflict names a key, never a line of the file.
        let err = merge("garbage sk-SECRET-4242\nX=1\n", &set(&[("X", "2")]), &[]).unwrap_err();
        assert_eq!((err.code(), err.key()), ("env_file_conflict", "X"));
        assert!(!err.to_string().contains(secret) && !format!("{err:?}").contains(secret));
    }

    #[test]
    fn a_value_cannot_inject_keys() {
        let out = merge(
            "A=1\n",
            &set(&[("K", "x\nINJECTED=1"), ("Q", "'\nINJECTED2=1\n'")]),
            &[],
        )
        .unwrap();
        assert_eq!(keys(&out), ["A", "K", "Q"]);
        for flavor in [Flavor::Node20, Flavor::Node22] {
            let names: Vec<String> = node_parse(&out, flavor)
                .into_iter()
                .map(|(k, _)| k)
                .collect();
            assert_eq!(names, ["A", "K", "Q"], "{flavor:?}");
        }
    }

    #[test]
    fn keys_lists_names_in_order_once() {
        let text = "# c\nB=1\n export A = 2\nbad key=3\nB=4\nM='x\nN=5'\n  # D=6\nC=\n";
        assert_eq!(keys(text), ["B", "A", "M", "C"]);
        assert!(keys("").is_empty());
    }

    #[test]
    fn values_are_what_vite_reads_without_expansion() {
        // Vite (checked with roundtrip.mjs) reads A=2 B="x $y" C="" D="" E="a$b" F="$"
        // G="${}" H="${a"; C and D depend on the environment, so they are left out.
        let text = "A=1\nB='x \\$y'\nC=$HOME\nD=${X}\nE=a\\$b\nA=2\nbad key=1\nF=$\nG=${}\nH=${a\n";
        let want = [
            ("A", "2"),
            ("B", "x $y"),
            ("E", "a$b"),
            ("F", "$"),
            ("G", "${}"),
            ("H", "${a"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(values(text), want);
        let merged = merge("", &set(&[("P", "$HOME ${X} \\$")]), &[]).unwrap();
        assert_eq!(
            values(&merged),
            [("P".to_string(), "$HOME ${X} \\$".to_string())]
        );
    }

    #[test]
    fn new_keys_go_before_trailing_lines_node_20_would_join_to_them() {
        // Node 20 reads "  # note\nK" as one key; Node 22 skips the line.
        let out = merge("A=1\n  # note\n", &set(&[("K", "v")]), &[]).unwrap();
        assert_eq!(out, "A=1\nK='v'\n  # note\n");
        let out = merge("A=1\n   \n", &set(&[("K", "v")]), &[]).unwrap();
        assert_eq!(out, "A=1\nK='v'\n   \n");
        let out = merge("stray\n", &set(&[("K", "v")]), &[]).unwrap();
        assert_eq!(out, "K='v'\nstray\n");
        // Where the key itself follows such a line, nothing can help: refused.
        let err = merge("A=1\nstray words\nK=old\n", &set(&[("K", "v")]), &[]).unwrap_err();
        assert_eq!((err.code(), err.key()), ("env_file_conflict", "K"));
    }

    #[test]
    fn models_match_node() {
        // Each expected map was printed by `util.parseEnv` of Node 20.20.2 and 22.23.3
        // (24.21 and 26.10 agree with 22).
        type Want = &'static [(&'static str, &'static str)];
        let cases: &[(&str, Want, Want)] = &[
            (
                "A=1\nB = two words # c\n# comment\nexport C='x y'\n",
                &[("A", "1"), ("B", "two words"), ("C", "x y")],
                &[("A", "1"), ("B", "two words"), ("C", "x y")],
            ),
            (
                "K=\"a\\nb\" tail\nJ='multi\nline'\nL=`b\"q'`\n",
                &[("J", "multi\nline"), ("K", "a\nb"), ("L", "b\"q'")],
                &[("J", "multi\nline"), ("K", "a\nb"), ("L", "b\"q'")],
            ),
            (
                "garbage\nK=1\n  # indented\nJ=2\n",
                &[("# indented\nJ", "2"), ("garbage\nK", "1")],
                &[("J", "2"), ("K", "1")],
            ),
            (
                "K= \nJ=2\n=3\nL=4\n",
                &[("J", "2"), ("K", "")],
                &[("K", "J=2"), ("L", "4")],
            ),
            (
                "K='open\nJ=1\nM=\"x\ry\"\r\n",
                &[("J", "1"), ("K", "'open"), ("M", "xy")],
                &[("J", "1"), ("K", "'open"), ("M", "xy")],
            ),
            (
                "K=\t x\t\nJ=a#b\n",
                &[("J", "a"), ("K", "\t x\t")],
                &[("J", "a"), ("K", "x")],
            ),
        ];
        for (text, node20, node22) in cases {
            for (flavor, want) in [(Flavor::Node20, node20), (Flavor::Node22, node22)] {
                let got: HashMap<String, String> = node_parse(text, flavor).into_iter().collect();
                let want: HashMap<String, String> = want
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                assert_eq!(got, want, "{flavor:?} {text:?}");
            }
        }
    }

    #[test]
    fn write_atomic_replaces_the_file_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".env");
        std::fs::write(&path, "OLD=1\n").unwrap();
        std::fs::set_permissions(&path, Permissions::from_mode(0o644)).unwrap();
        let me = (
            nix::unistd::getuid().as_raw(),
            nix::unistd::getgid().as_raw(),
        );
        write_atomic(&path, "NEW='2'\n", Some(me)).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "NEW='2'\n");
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        write_atomic(&dir.path().join("fresh"), "", None).unwrap();
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names.len(),
            2,
            "no temporary file is left behind: {names:?}"
        );
        assert!(write_atomic(&dir.path().join("missing/.env"), "x", None).is_err());
        std::fs::create_dir(dir.path().join("a_dir")).unwrap();
        assert!(write_atomic(&dir.path().join("a_dir"), "x", None).is_err());
        let count = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(count, 3, "a failed write leaves no temporary file");
    }
}

#[cfg(test)]
#[path = "envfile_props.rs"]
mod props;
