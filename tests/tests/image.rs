//! The E2B template (`image/`), checked offline: no Docker engine, no E2B account, no
//! node_modules in image/. The build context is the repository root (image/Dockerfile and
//! image/template.ts say so). Checked: every COPY/ADD source exists in the context and is
//! not dropped by image/Dockerfile.dockerignore; the image gets /opt/supervisor, /app and
//! /usr/local/bin/supervisor from opt/, app-template/ and the static binary; the packages
//! the stack runs are installed; the paths template.ts names exist; its start and ready
//! commands are real subcommands of the binary with flags it accepts, and the start
//! command's config passes `supervisor check`.

use e2e::{repo_root, supervisor_bin};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Where image/build-binary.sh leaves the static binary (relative to the repo root).
const STATIC_BIN: &str = "target/x86_64-unknown-linux-musl/release/supervisor";

/// One Dockerfile instruction: keyword (upper case), the words after it, its first line.
#[derive(Debug)]
struct Instr {
    keyword: String,
    words: Vec<String>,
    line: usize,
}

impl Instr {
    /// The text after the keyword, words joined by single spaces.
    fn rest(&self) -> String {
        self.words.join(" ")
    }
}

/// A COPY/ADD: sources (relative to the context), destination, line.
#[derive(Debug)]
struct Copy {
    sources: Vec<String>,
    dest: String,
    line: usize,
}

fn image_file(name: &str) -> PathBuf {
    repo_root().join("image").join(name)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Line-based Dockerfile parsing: `\` continues a line, `#` lines are comments (also inside a
/// continued instruction, as Docker does). No heredocs, no escape-directive changes.
fn parse_dockerfile(text: &str) -> Vec<Instr> {
    let mut out = Vec::new();
    let mut cur: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let t = raw.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_none()) {
            continue;
        }
        let (cont, body) = match t.strip_suffix('\\') {
            Some(b) => (true, b),
            None => (false, t),
        };
        match cur.as_mut() {
            Some((_, acc)) => {
                acc.push(' ');
                acc.push_str(body);
            }
            None => cur = Some((i + 1, body.to_string())),
        }
        if !cont {
            let (line, acc) = cur.take().unwrap();
            let mut words = acc.split_whitespace().map(str::to_string);
            let keyword = words.next().unwrap_or_default().to_ascii_uppercase();
            out.push(Instr { keyword, words: words.collect(), line });
        }
    }
    assert!(cur.is_none(), "image/Dockerfile ends inside a `\\` continuation");
    out
}

fn dockerfile() -> Vec<Instr> {
    let instrs = parse_dockerfile(&read(&image_file("Dockerfile")));
    assert!(!instrs.is_empty(), "image/Dockerfile has no instructions");
    instrs
}

fn copies(instrs: &[Instr]) -> Vec<Copy> {
    instrs
        .iter()
        .filter(|i| i.keyword == "COPY" || i.keyword == "ADD")
        .map(|i| {
            assert!(
                !i.words.iter().any(|w| w.starts_with("--from")),
                "image/Dockerfile:{}: COPY --from needs a second stage, which E2B's fromDockerfile rejects",
                i.line
            );
            assert!(
                !i.words.first().is_some_and(|w| w.starts_with('[')),
                "image/Dockerfile:{}: use the plain `COPY src... dest` form (this test and E2B's parser read it word by word)",
                i.line
            );
            let args: Vec<String> = i.words.iter().filter(|w| !w.starts_with("--")).cloned().collect();
            assert!(args.len() >= 2, "image/Dockerfile:{}: {} needs a source and a destination: {}", i.line, i.keyword, i.rest());
            let (dest, sources) = args.split_last().unwrap();
            Copy { sources: sources.to_vec(), dest: dest.clone(), line: i.line }
        })
        .collect()
}

/// The context-relative path a COPY source names (`opt/` -> `opt`).
fn source_path(src: &str) -> String {
    src.trim_start_matches("./").trim_end_matches('/').to_string()
}

/// The repo path that ends up at `image_path` in the image, through the COPY whose destination
/// holds it (`/opt/supervisor/supervisor.toml` -> `opt/supervisor.toml`).
fn repo_path_of(image_path: &str, copies: &[Copy]) -> Option<PathBuf> {
    for c in copies {
        if c.sources.len() != 1 {
            continue;
        }
        let src = source_path(&c.sources[0]);
        if c.dest.ends_with('/') {
            let dir = c.dest.trim_end_matches('/');
            if let Some(rest) = image_path.strip_prefix(dir).and_then(|r| r.strip_prefix('/')) {
                if repo_root().join(&src).is_dir() {
                    return Some(repo_root().join(&src).join(rest));
                }
            }
        } else if c.dest == image_path {
            return Some(repo_root().join(&src));
        }
    }
    None
}

fn static_bin_missing_message() -> String {
    format!(
        "{STATIC_BIN} does not exist: the image copies the static binary, so build it first with \
         image/build-binary.sh (scripts/test.sh does, before the tests)"
    )
}

#[test]
fn dockerfile_is_one_stage_on_debian_bookworm_without_what_e2b_ignores_or_rejects() {
    let instrs = dockerfile();
    let froms: Vec<&Instr> = instrs.iter().filter(|i| i.keyword == "FROM").collect();
    assert_eq!(froms.len(), 1, "image/Dockerfile must have exactly one FROM (E2B's fromDockerfile rejects multi-stage): {froms:?}");
    assert_eq!(instrs[0].keyword, "FROM", "image/Dockerfile must start with FROM, found {} on line {}", instrs[0].keyword, instrs[0].line);
    let base = froms[0].rest();
    assert!(
        base.contains("bookworm"),
        "image/Dockerfile:{}: the base must be Debian 12 (bookworm), like the machines the tests run on; found `{base}`",
        froms[0].line
    );
    for i in &instrs {
        // E2B turns ENV/ARG into the sandbox's runtime env, USER/WORKDIR into its defaults,
        // and CMD/ENTRYPOINT into a start command with a 20 s sleep as ready check;
        // anything else it drops with a warning.
        assert!(
            matches!(i.keyword.as_str(), "FROM" | "RUN" | "COPY" | "ADD"),
            "image/Dockerfile:{}: {} is not wanted here (E2B maps it to runtime defaults or drops it); \
             set per-command variables inline and the start command in image/template.ts",
            i.line,
            i.keyword
        );
    }
}

#[test]
fn dockerfile_copy_sources_exist_in_the_build_context() {
    let instrs = dockerfile();
    let copies = copies(&instrs);
    assert!(!copies.is_empty(), "image/Dockerfile copies nothing");
    let root = repo_root();
    for c in &copies {
        for src in &c.sources {
            let rel = source_path(src);
            assert!(
                !src.starts_with('/') && !rel.split('/').any(|p| p == ".."),
                "image/Dockerfile:{}: COPY source `{src}` must be inside the build context (the repo root)",
                c.line
            );
            assert!(!rel.contains('*') && !rel.contains('?'), "image/Dockerfile:{}: name COPY sources literally, not `{src}`", c.line);
            let path = root.join(&rel);
            if rel == STATIC_BIN {
                assert!(path.is_file(), "image/Dockerfile:{}: {}", c.line, static_bin_missing_message());
            } else {
                assert!(
                    path.exists(),
                    "image/Dockerfile:{}: COPY source `{src}` does not exist at {} (the build context is the repo root)",
                    c.line,
                    path.display()
                );
            }
        }
    }
}

#[test]
fn dockerignore_keeps_every_copy_source_and_drops_node_modules_and_target() {
    let path = image_file("Dockerfile.dockerignore");
    let text = read(&path);
    let patterns: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).collect();
    for must in ["**/node_modules", "target", ".git", "app-template/.env", "app-template/.env.*", "app-template/dist"] {
        assert!(
            patterns.contains(&must),
            "{} must exclude `{must}` (the context is the repo root); patterns: {patterns:?}",
            path.display()
        );
    }
    // Literal patterns only (`**/` prefix allowed): a pattern drops a path if it names the
    // path or one of its parent directories; a later `!pattern` brings it back (Docker's rules).
    let drops = |pat: &str, p: &str| -> bool {
        match pat.strip_prefix("**/") {
            Some(name) => p.split('/').any(|c| c == name),
            None => p == pat || p.starts_with(&format!("{pat}/")),
        }
    };
    for c in copies(&dockerfile()) {
        for src in &c.sources {
            let rel = source_path(src);
            let mut kept = true;
            for pat in &patterns {
                match pat.strip_prefix('!') {
                    Some(p) if drops(p, &rel) => kept = true,
                    None if drops(pat, &rel) => kept = false,
                    _ => {}
                }
            }
            assert!(kept, "image/Dockerfile:{}: COPY source `{src}` is excluded by {}: add `!{rel}`", c.line, path.display());
        }
    }
}

#[test]
fn image_gets_opt_app_and_the_binary_at_their_destinations() {
    let copies = copies(&dockerfile());
    for (src, dest) in [("opt", "/opt/supervisor/"), ("app-template", "/app/"), (STATIC_BIN, "/usr/local/bin/supervisor")] {
        assert!(
            copies.iter().any(|c| c.dest == dest && c.sources.iter().any(|s| source_path(s) == src)),
            "image/Dockerfile must COPY {src} to {dest}; its copies: {:?}",
            copies.iter().map(|c| format!("line {}: {:?} -> {}", c.line, c.sources, c.dest)).collect::<Vec<_>>()
        );
    }
}

#[test]
fn dockerfile_installs_the_stack() {
    let instrs = dockerfile();
    let runs: Vec<String> = instrs.iter().filter(|i| i.keyword == "RUN").map(Instr::rest).collect();
    // Debian packages: the words after `apt-get install` up to the next `&&` / `;`.
    let mut packages = Vec::new();
    for run in &runs {
        let words: Vec<&str> = run.split_whitespace().collect();
        for (k, w) in words.iter().enumerate() {
            if *w == "install" && k > 0 && words[k - 1].ends_with("apt-get") {
                packages.extend(
                    words[k + 1..]
                        .iter()
                        .take_while(|w| !matches!(**w, "&&" | ";" | "||"))
                        .filter(|w| !w.starts_with('-'))
                        .map(|w| w.to_string()),
                );
            }
        }
    }
    // chromium, xvfb, fonts: the browser; nftables: the port guard (opt/supervisor.toml asks
    // for it); sudo: template.ts's start command; procps: ps/pgrep for people debugging.
    for pkg in ["chromium", "xvfb", "fonts-liberation", "nftables", "sudo", "procps", "ca-certificates"] {
        assert!(packages.iter().any(|p| p == pkg), "image/Dockerfile must apt-get install `{pkg}`; it installs {packages:?}");
    }
    let has = |needle: &[&str]| runs.iter().any(|r| needle.iter().all(|n| r.contains(n)));
    assert!(
        has(&["useradd", " user"]),
        "image/Dockerfile must create the account `user` (opt/supervisor.toml's service_user) before chowning /app to it"
    );
    assert!(
        has(&["PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1", "npm ci", "/opt/supervisor"]),
        "image/Dockerfile must `npm ci` in /opt/supervisor with PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 (Chromium comes from Debian); RUNs: {runs:#?}"
    );
    assert!(has(&["cd /app", "npm ci"]), "image/Dockerfile must `npm ci` in /app (with dev dependencies: vite is one); RUNs: {runs:#?}");
    assert!(
        runs.iter().any(|r| r.contains("npm ci") && r.contains("/app") && !r.contains("--omit=dev") && !r.contains("--production")),
        "image/Dockerfile: /app needs its dev dependencies (vite); RUNs: {runs:#?}"
    );
    assert!(
        has(&["chown -R user:user /app"]),
        "image/Dockerfile must give /app to `user` (Vite and the agent write there); RUNs: {runs:#?}"
    );
    let useradd = runs.iter().position(|r| r.contains("useradd")).unwrap();
    let chown = runs.iter().position(|r| r.contains("chown -R user:user /app")).unwrap();
    assert!(useradd < chown, "image/Dockerfile: `user` must exist before /app is chowned to it (E2B creates it only after these steps)");
}

/// A `const NAME = '...'` (or "...") string literal from image/template.ts.
fn ts_const(text: &str, name: &str) -> String {
    let line = text
        .lines()
        .find(|l| {
            let l = l.trim_start().trim_start_matches("export ").trim_start();
            l.strip_prefix("const ").is_some_and(|r| r.trim_start().starts_with(&format!("{name} =")))
        })
        .unwrap_or_else(|| panic!("image/template.ts has no `const {name} = '...'`"));
    let start = line.find(['\'', '"']).unwrap_or_else(|| panic!("image/template.ts: `{name}` is not a string literal: {line}"));
    let quote = line[start..].chars().next().unwrap();
    let rest = &line[start + 1..];
    let end = rest.find(quote).unwrap_or_else(|| panic!("image/template.ts: unterminated string for `{name}`: {line}"));
    rest[..end].to_string()
}

/// Every `path.join(here, '...')` / `path.resolve(here, '...')` in image/template.ts.
fn ts_paths(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for call in ["path.join(here,", "path.resolve(here,"] {
        let mut rest = text;
        while let Some(at) = rest.find(call) {
            rest = &rest[at + call.len()..];
            let arg = rest.trim_start();
            let q = arg
                .chars()
                .next()
                .filter(|c| *c == '\'' || *c == '"')
                .unwrap_or_else(|| panic!("image/template.ts: `{call}` takes a string literal here: {}", &arg[..arg.len().min(40)]));
            let end = arg[1..].find(q).expect("unterminated string in image/template.ts");
            out.push(arg[1..1 + end].to_string());
        }
    }
    out
}

#[test]
fn template_ts_builds_the_dockerfile_from_the_repo_root() {
    let text = read(&image_file("template.ts"));
    let paths = ts_paths(&text);
    assert!(!paths.is_empty(), "image/template.ts names no files through path.join/resolve(here, ...)");
    for p in &paths {
        let full = repo_root().join("image").join(p);
        assert!(full.exists(), "image/template.ts names `{p}`, but {} does not exist", full.display());
    }
    assert!(
        text.contains(".fromDockerfile(path.join(here, 'Dockerfile'))"),
        "image/template.ts must build from image/Dockerfile by absolute path (a relative path is read from the caller's cwd, and if missing the SDK takes the string as Dockerfile text)"
    );
    assert!(
        text.contains("export const contextDir = path.resolve(here, '..')") && text.contains("fileContextPath: contextDir"),
        "image/template.ts must set fileContextPath to the repo root (image/..), the context image/Dockerfile's COPY sources are relative to"
    );
    assert_eq!(
        std::fs::canonicalize(repo_root().join("image").join("..")).unwrap(),
        std::fs::canonicalize(repo_root()).unwrap(),
        "image/.. is not the repo root"
    );
    for pat in ["**/node_modules", "**/node_modules/**", "app-template/.env", "app-template/.env.*"] {
        assert!(
            text.contains(&format!("'{pat}'")),
            "image/template.ts must pass fileIgnorePatterns with '{pat}' (E2B does not read Dockerfile.dockerignore)"
        );
    }
    assert!(text.contains(".setStartCmd(startCmd, readyCmd)"), "image/template.ts must call .setStartCmd(startCmd, readyCmd)");
}

fn run_bin(args: &[&str]) -> Output {
    let bin = supervisor_bin();
    Command::new(&bin).args(args).current_dir(repo_root()).output().unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

fn show(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `supervisor ARGS --help` succeeds: the subcommand and every flag as written exist (clap
/// rejects an unknown one before `--help`).
fn assert_flags_accepted(name: &str, cmd: &str, args: &[String]) {
    let mut help: Vec<&str> = args.iter().map(String::as_str).collect();
    help.push("--help");
    let out = run_bin(&help);
    assert!(out.status.success(), "{name} `{cmd}`: `supervisor {}` fails:\n{}", help.join(" "), show(&out));
}

/// Splits a template.ts command into the binary's arguments: drops an optional `sudo` (its
/// caller checks that the image installs it), checks that the program is where the image
/// puts the binary, and maps every absolute path argument to the repo file the image copies
/// there, which must exist.
fn command_args(name: &str, cmd: &str, copies: &[Copy]) -> Vec<String> {
    let mut words: Vec<&str> = cmd.split_whitespace().collect();
    assert!(!words.is_empty(), "image/template.ts: {name} is empty");
    if words[0] == "sudo" {
        words.remove(0);
    }
    let program = words.first().copied().unwrap_or_default();
    assert!(
        program == "/usr/local/bin/supervisor" || program == "supervisor",
        "image/template.ts: {name} `{cmd}` must run the supervisor (/usr/local/bin/supervisor), not `{program}`"
    );
    assert!(
        copies.iter().any(|c| c.dest == "/usr/local/bin/supervisor" && c.sources.iter().any(|s| source_path(s) == STATIC_BIN)),
        "image/Dockerfile must install {STATIC_BIN} as /usr/local/bin/supervisor, which {name} runs"
    );
    words[1..]
        .iter()
        .map(|w| {
            if w.starts_with('/') {
                let repo = repo_path_of(w, copies)
                    .unwrap_or_else(|| panic!("image/template.ts: {name} names {w}, which no COPY in image/Dockerfile puts in the image"));
                assert!(repo.exists(), "image/template.ts: {name} names {w}, copied from {}, which does not exist", repo.display());
                repo.to_string_lossy().into_owned()
            } else {
                w.to_string()
            }
        })
        .collect()
}

#[test]
fn start_command_runs_the_shipped_config() {
    let text = read(&image_file("template.ts"));
    let cmd = ts_const(&text, "startCmd");
    let instructions = dockerfile();
    let copies = copies(&instructions);
    if cmd.starts_with("sudo ") {
        assert!(
            instructions.iter().any(|i| i.keyword == "RUN" && i.rest().contains(" sudo ")),
            "image/template.ts's startCmd uses sudo: image/Dockerfile must install it"
        );
    }
    let args = command_args("startCmd", &cmd, &copies);
    assert_eq!(args.first().map(String::as_str), Some("run"), "image/template.ts: startCmd `{cmd}` must be `supervisor run ...`");
    assert_flags_accepted("startCmd", &cmd, &args);
    // The same flags through `check`: the config the image ships validates.
    let mut check: Vec<&str> = args.iter().map(String::as_str).collect();
    check[0] = "check";
    if !check.contains(&"--config") {
        // `run` without --config reads /opt/supervisor/supervisor.toml: the image's copy of opt/.
        let shipped =
            repo_path_of("/opt/supervisor/supervisor.toml", &copies).expect("image/Dockerfile must COPY opt/ to /opt/supervisor/");
        let out = run_bin(&["check", "--config", &shipped.to_string_lossy()]);
        assert!(out.status.success(), "the config at /opt/supervisor/supervisor.toml fails `supervisor check`:\n{}", show(&out));
    }
    let out = run_bin(&check);
    assert!(out.status.success(), "startCmd `{cmd}`: `supervisor {}` fails:\n{}", check.join(" "), show(&out));
}

#[test]
fn ready_command_is_supervisor_ready_and_fails_while_nothing_runs() {
    let text = read(&image_file("template.ts"));
    let cmd = ts_const(&text, "readyCmd");
    let args = command_args("readyCmd", &cmd, &copies(&dockerfile()));
    assert_eq!(args.first().map(String::as_str), Some("ready"), "image/template.ts: readyCmd `{cmd}` must be `supervisor ready ...`");
    assert_flags_accepted("readyCmd", &cmd, &args);
    // E2B snapshots once the ready command exits 0: with no supervisor running it must fail.
    let dir = tempfile::tempdir().unwrap();
    let t0 = Instant::now();
    let out = run_bin(&["ready", "--timeout", "1", "--runtime-dir", &dir.path().to_string_lossy()]);
    assert!(!out.status.success(), "`supervisor ready` succeeded with no supervisor running:\n{}", show(&out));
    assert!(t0.elapsed() < Duration::from_secs(10), "`supervisor ready --timeout 1` took {:?}", t0.elapsed());
}

#[test]
fn shipped_config_passes_check_and_drops_services_to_user() {
    let config = repo_root().join("opt/supervisor.toml");
    let out = run_bin(&["check", "--config", &config.to_string_lossy()]);
    assert!(
        out.status.success(),
        "opt/supervisor.toml (the image's /opt/supervisor/supervisor.toml) fails `supervisor check`:\n{}",
        show(&out)
    );
    // The image creates `user`; the config must drop services to that very account.
    let text = read(&config);
    assert!(
        text.lines().any(|l| l.split('#').next().unwrap().replace(' ', "") == "service_user=\"user\""),
        "opt/supervisor.toml must set service_user = \"user\", the account image/Dockerfile creates"
    );
}

#[test]
fn static_binary_is_built() {
    let path = repo_root().join(STATIC_BIN);
    assert!(path.is_file(), "{}", static_bin_missing_message());
    let out = Command::new(&path).arg("--version").output().unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    assert!(out.status.success(), "{} --version fails:\n{}", path.display(), show(&out));
}

// ---- Node 24, the pinned npm packages, the trimmed image, the smoke test's inputs ----------

fn json_file(rel: &str) -> serde_json::Value {
    let path = repo_root().join(rel);
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", path.display()))
}

/// `NAME=value` assigned at the start of a line of a shell script.
fn sh_var(script: &str, name: &str) -> String {
    let path = repo_root().join(script);
    read(&path)
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{} has no `{name}=` line", path.display()))
        .trim()
        .to_string()
}

#[test]
fn image_and_machines_run_node_24_lts() {
    let instrs = dockerfile();
    let base = instrs.iter().find(|i| i.keyword == "FROM").unwrap().rest();
    assert!(
        base.starts_with("node:24-bookworm-slim"),
        "image/Dockerfile must start FROM node:24-bookworm-slim (Node 24 LTS; Node 20 is past its end of life), found `{base}`"
    );
    // setup.sh installs the same Node the local stand-in base ships, integrity-checked.
    for var in ["NODE_VERSION", "NODE_INTEGRITY"] {
        let (setup, base) = (sh_var("scripts/setup.sh", var), sh_var("image/local-base.sh", var));
        assert_eq!(setup, base, "{var} differs between scripts/setup.sh and image/local-base.sh");
    }
    let version = sh_var("scripts/setup.sh", "NODE_VERSION");
    assert!(version.starts_with("24.") && version.split('.').count() == 3, "scripts/setup.sh: NODE_VERSION={version} must be an exact 24.x.y");
    assert!(sh_var("scripts/setup.sh", "NODE_INTEGRITY").starts_with("sha512-"), "scripts/setup.sh: NODE_INTEGRITY must be the tarball's sha512");
    assert_eq!(sh_var("image/local-base.sh", "BASE"), "localhost/node:24-bookworm-slim", "image/local-base.sh must make the base the Dockerfile names");
}

/// Every dependency of a package.json is an exact `x.y.z` and the lock was made from it.
fn assert_pinned_and_locked(dir: &str) -> serde_json::Value {
    let pkg = json_file(&format!("{dir}/package.json"));
    let lock = json_file(&format!("{dir}/package-lock.json"));
    for field in ["dependencies", "devDependencies"] {
        let Some(deps) = pkg[field].as_object() else { continue };
        for (name, spec) in deps {
            let spec = spec.as_str().unwrap_or_default();
            assert!(
                spec.split('.').count() == 3 && spec.split('.').all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())),
                "{dir}/package.json: {field}.{name} = `{spec}` must be an exact version"
            );
            assert_eq!(lock["packages"][""][field][name].as_str(), Some(spec), "{dir}/package-lock.json is not in step with package.json for {name}: run npm install");
            assert_eq!(
                lock["packages"][format!("node_modules/{name}")]["version"].as_str(),
                Some(spec),
                "{dir}/package-lock.json locks another version of {name}"
            );
        }
    }
    lock
}

#[test]
fn opt_pins_the_maintained_acp_agent_and_the_config_runs_its_bin() {
    let lock = assert_pinned_and_locked("opt");
    let pkg = json_file("opt/package.json");
    let deps = pkg["dependencies"].as_object().expect("opt/package.json has dependencies");
    assert!(!deps.contains_key("@zed-industries/claude-agent-acp"), "opt/package.json: @zed-industries/claude-agent-acp stopped at 0.23.1; use @agentclientprotocol/claude-agent-acp");
    assert!(deps.contains_key("@agentclientprotocol/claude-agent-acp"), "opt/package.json must pin @agentclientprotocol/claude-agent-acp");
    assert!(deps.contains_key("@playwright/mcp"), "opt/package.json must pin @playwright/mcp");
    let agent = &lock["packages"]["node_modules/@agentclientprotocol/claude-agent-acp"];
    // Its engines must admit the image's Node (24).
    let engines = agent["engines"]["node"].as_str().unwrap_or(">=0");
    let min: u32 = engines.trim_start_matches(">=").split('.').next().unwrap().trim().parse().unwrap_or(0);
    assert!(engines.starts_with(">=") && min <= 24, "claude-agent-acp needs node `{engines}`: the image has Node 24");
    // The acp service runs ${CONFIG_DIR}/node_modules/.bin/<the package's bin>.
    let bins: Vec<&String> = agent["bin"].as_object().expect("the agent package has a bin").keys().collect();
    let toml = read(&repo_root().join("opt/supervisor.toml"));
    assert!(
        bins.iter().any(|b| toml.contains(&format!("\"${{CONFIG_DIR}}/node_modules/.bin/{b}\""))),
        "opt/supervisor.toml's acp command must run ${{CONFIG_DIR}}/node_modules/.bin/ one of {bins:?}"
    );
    for b in ["playwright-mcp"] {
        assert!(toml.contains(&format!("${{CONFIG_DIR}}/node_modules/.bin/{b}")), "opt/supervisor.toml must run {b} from opt/node_modules");
    }
}

#[test]
fn app_template_pins_vite_8_react_19_and_tailwind_4() {
    assert_pinned_and_locked("app-template");
    let pkg = json_file("app-template/package.json");
    let dep = |name: &str| -> String {
        pkg["dependencies"][name].as_str().or_else(|| pkg["devDependencies"][name].as_str()).unwrap_or_else(|| panic!("app-template/package.json lacks {name}")).to_string()
    };
    for (name, major) in [("vite", "8."), ("react", "19."), ("react-dom", "19."), ("tailwindcss", "4."), ("@tailwindcss/vite", "4."), ("@vitejs/plugin-react", "6.")] {
        assert!(dep(name).starts_with(major), "app-template: {name} {} is not {major}x", dep(name));
    }
    assert_eq!(dep("tailwindcss"), dep("@tailwindcss/vite"), "tailwindcss and @tailwindcss/vite must be the same release");
}

#[test]
fn no_npm_credentials_or_ca_can_reach_the_image() {
    // The build CA arrives only as a build-time mount (image/smoke.sh); the Dockerfile never
    // names it, and no npm config travels in a COPY source.
    let text = read(&image_file("Dockerfile"));
    let code: String = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
    for needle in ["cafile", "NODE_EXTRA_CA_CERTS", ".npmrc", "npm_config_", "NPM_CONFIG_", "--mount"] {
        assert!(!code.contains(needle), "image/Dockerfile must not mention `{needle}`: npm's CA/config is a build-time mount only");
    }
    for c in copies(&dockerfile()) {
        for src in &c.sources {
            let path = repo_root().join(source_path(src));
            for rc in [".npmrc", "npmrc"] {
                assert!(!path.join(rc).exists(), "{}/{rc} would be copied into the image", path.display());
            }
        }
    }
    let smoke = read(&image_file("smoke.sh"));
    assert!(smoke.contains("NODE_EXTRA_CA_CERTS") && smoke.contains(":ro\""), "image/smoke.sh mounts the machine's npm CA read-only for the build");
}

#[test]
fn dockerfile_trims_docs_caches_and_package_lists() {
    let runs: Vec<String> = dockerfile().iter().filter(|i| i.keyword == "RUN").map(Instr::rest).collect();
    let apt = runs.iter().find(|r| r.contains("apt-get install")).expect("image/Dockerfile installs Debian packages");
    for must in ["path-exclude=/usr/share/doc/*", "path-exclude=/usr/share/man/*", "rm -rf /var/lib/apt/lists/*", "apt-get clean"] {
        assert!(apt.contains(must), "image/Dockerfile's apt-get RUN must do `{must}` (free size): {apt}");
    }
    let before_install = &apt[..apt.find("apt-get install").unwrap()];
    assert!(before_install.contains("path-exclude"), "the dpkg excludes must be in place before apt-get install");
    for r in runs.iter().filter(|r| r.contains("npm ci")) {
        assert!(
            r.contains("rm -rf /root/.npm /tmp/node-compile-cache"),
            "image/Dockerfile: every `npm ci` RUN must drop npm's cache (/root/.npm) and Node's compile cache (/tmp/node-compile-cache): {r}"
        );
    }
}

#[test]
fn smoke_test_reads_the_commands_from_template_ts() {
    // image/smoke.sh reads `export const startCmd = '...'` lines with sed: keep that form.
    let text = read(&image_file("template.ts"));
    for name in ["startCmd", "readyCmd"] {
        assert!(
            text.lines().any(|l| l.starts_with(&format!("export const {name} = '")) && l.ends_with('\'')),
            "image/template.ts: `{name}` must stay one line `export const {name} = '...'` (image/smoke.sh reads it)"
        );
    }
    let smoke = read(&image_file("smoke.sh"));
    assert!(smoke.contains("ts_const startCmd") && smoke.contains("ts_const readyCmd"), "image/smoke.sh must take both commands from template.ts");
    assert!(smoke.contains("-f image/Dockerfile"), "image/smoke.sh must build image/Dockerfile itself");
    for f in ["smoke.sh", "local-base.sh"] {
        let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(image_file(f)).unwrap().permissions());
        assert!(mode & 0o111 != 0, "image/{f} must be executable");
    }
}
