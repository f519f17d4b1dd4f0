//! Git sources through the real binary: `kiln mirror git add`, a pipeline whose step reads a
//! pinned commit at `/src/app`, provenance naming that commit, and every way a pin is refused
//! (a commit that does not exist, is not reachable, is not what its id says, is not where the
//! pipeline's ref points, or is not signed by an allowed signer), by `kiln run` and by the
//! daemon on `kiln submit`.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use common::cluster::Cluster;
use common::{Env, text};
use kiln_daemon::state::Backend;
use serde_json::Value;

/// Runs git in `dir` with a fixed identity; the trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
        .args([
            "-c",
            "commit.gpgsign=false",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .output()
        .expect("run git");
    assert!(out.status.success(), "git {args:?}: {}", text(&out));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A repository at `DIR/repo` with README committed on `main`; (path, commit id).
fn repo(env: &Env, readme: &str) -> (PathBuf, String) {
    let dir = env.path("repo");
    fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q"]);
    fs::write(dir.join("README"), readme).unwrap();
    git(&dir, &["add", "README"]);
    git(&dir, &["commit", "-q", "-m", "first"]);
    let commit = git(&dir, &["rev-parse", "HEAD"]);
    (dir, commit)
}

/// A pipeline that copies `/src/app/README` to the artifact `readme`, and proves it cannot
/// write under `/src`.
fn pipeline(commit: &str, git_ref: Option<&str>) -> String {
    let git_ref = git_ref.map_or(String::new(), |r| format!(", ref: {r}"));
    format!(
        "version: 1\nname: src\nrootfs: busybox@1\nsources:\n  app: {{ git: app, commit: {commit}{git_ref} }}\n\
         steps:\n  - name: read\n    sources: [app]\n    run: |\n      cat /src/app/README > /out/readme\n      \
         if touch /src/app/new 2>/dev/null || touch /src/new 2>/dev/null || rm /src/app/README 2>/dev/null; then echo wrote under /src; exit 1; fi\n    \
         outputs: [readme]\nartifacts:\n  - {{ name: readme, from: read, path: readme }}\n"
    )
}

fn add_mirror(env: &Env, origin: &Path, extra: &[&str]) {
    let mut args = vec![
        "mirror",
        "git",
        "add",
        origin.to_str().unwrap(),
        "--name",
        "app",
    ];
    args.extend(extra);
    env.kiln_ok(&args);
}

/// The provenance statement of artifact `name` in `dir`.
fn statement(dir: &Path, name: &str) -> Value {
    let envelope: Value =
        serde_json::from_slice(&fs::read(dir.join(format!("{name}.intoto.jsonl"))).unwrap())
            .unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(envelope["payload"].as_str().unwrap())
        .unwrap();
    serde_json::from_slice(&payload).unwrap()
}

/// The resolved dependency of kind `git` in a statement.
fn git_dependency(statement: &Value) -> Value {
    let deps = statement["predicate"]["buildDefinition"]["resolvedDependencies"]
        .as_array()
        .unwrap();
    let git: Vec<&Value> = deps
        .iter()
        .filter(|d| d["annotations"]["kind"] == "git")
        .collect();
    assert_eq!(git.len(), 1, "{deps:#?}");
    git[0].clone()
}

/// `kiln run` of `yaml`, which must be refused before any step runs; the output.
fn refused(env: &Env, file: &str, yaml: &str) -> String {
    let out = env.run(&env.write(file, yaml));
    assert_eq!(out.status.code(), Some(2), "{file}: {}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("run refused"), "{shown}");
    shown
}

#[test]
fn a_pinned_commit_is_mounted_read_only_and_named_in_provenance() {
    let env = Env::new();
    env.import_busybox();
    let (origin, commit) = repo(&env, "hello from git\n");
    add_mirror(&env, &origin, &[]);

    let out = env.run(&env.write("src.yaml", &pipeline(&commit, Some("main"))));
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(
        fs::read_to_string(env.path("out/readme")).unwrap(),
        "hello from git\n"
    );

    let dep = git_dependency(&statement(&env.path("out"), "readme"));
    let origin = fs::canonicalize(&origin).unwrap();
    assert_eq!(dep["name"], "app");
    assert_eq!(
        dep["uri"],
        format!("git+file://{}@{commit}", origin.display())
    );
    assert_eq!(dep["digest"]["gitCommit"], commit.as_str());
    assert_eq!(dep["annotations"]["ref"], "main");
    // The tree digest names the exported tree, which the store holds once.
    let tree = dep["digest"]["sha256"].as_str().unwrap();
    assert!(
        env.data_dir()
            .join("store/blobs/sha256")
            .join(&tree[..2])
            .join(tree)
            .is_file()
    );
    let listed = env.kiln_ok(&["mirror", "git", "list"]);
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.starts_with(&format!("app\t{}\t", origin.display())),
        "{listed}"
    );
}

#[test]
fn commits_that_are_missing_unreachable_forged_or_off_their_ref_are_refused() {
    let env = Env::new();
    env.import_busybox();
    let (origin, first) = repo(&env, "one\n");
    git(&origin, &["tag", "v1"]);
    git(&origin, &["commit", "-q", "--allow-empty", "-m", "second"]);
    let second = git(&origin, &["rev-parse", "HEAD"]);
    // A commit on no branch or tag: fetched under a ref that is then deleted in the mirror.
    let tree = git(&origin, &["rev-parse", "HEAD^{tree}"]);
    let dangling = git(&origin, &["commit-tree", &tree, "-m", "dangling"]);
    git(&origin, &["update-ref", "refs/heads/tmp", &dangling]);
    add_mirror(&env, &origin, &[]);
    let mirror = env.data_dir().join("git/app.git");
    git(&mirror, &["update-ref", "-d", "refs/heads/tmp"]);
    // A commit object planted under an id that is not its own.
    let forged = format!(
        "{}{}",
        &first[..39],
        if first.ends_with('0') { "1" } else { "0" }
    );
    let loose = |root: &Path, id: &str| root.join("objects").join(&id[..2]).join(&id[2..]);
    fs::create_dir_all(loose(&mirror, &forged).parent().unwrap()).unwrap();
    fs::copy(loose(&origin.join(".git"), &first), loose(&mirror, &forged)).unwrap();

    let absent = "0123456789abcdef0123456789abcdef01234567";
    let cases = [
        (pipeline(absent, None), "does not exist"),
        (
            pipeline(&dangling, None),
            "is not reachable from any branch or tag",
        ),
        (pipeline(&forged, None), "its id does not match its content"),
        (
            pipeline(&second, Some("v1")),
            &*format!("v1 points at {first}"),
        ),
        (pipeline(&first, Some("v9")), "no branch or tag v9"),
    ];
    for (i, (yaml, expected)) in cases.iter().enumerate() {
        let shown = refused(&env, &format!("bad-{i}.yaml"), yaml);
        assert!(shown.contains(expected), "case {i}: {shown}");
        assert!(
            shown.contains("source app: git mirror app:"),
            "case {i}: {shown}"
        );
    }
    assert!(!env.path("out/readme").exists());
    // Both reachable commits still run.
    for commit in [&first, &second] {
        let out = env.run(&env.write("ok.yaml", &pipeline(commit, None)));
        assert!(out.status.success(), "{}", text(&out));
    }
}

#[test]
fn a_branch_alone_is_not_a_pin() {
    let env = Env::new();
    let yaml = "version: 1\nname: src\nrootfs: busybox@1\nsources:\n  app: { git: app, ref: main }\nsteps:\n  - { name: a, sources: [app], run: \"true\" }\n";
    let out = env.run(&env.write("branch.yaml", yaml));
    // Refused while parsing, before the data dir is opened.
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(!env.data_dir().exists());
    assert!(
        text(&out).contains(
            "branch.yaml:5:25: source `app`: a branch or tag is not pinned: give `commit: <40 hex>`"
        ),
        "{}",
        text(&out)
    );
}

#[test]
fn a_mirror_name_stays_bound_to_its_origin() {
    let env = Env::new();
    let (origin, _) = repo(&env, "one\n");
    add_mirror(&env, &origin, &[]);
    // Again from the same origin: an update.
    let again = env.kiln_ok(&[
        "mirror",
        "git",
        "add",
        origin.to_str().unwrap(),
        "--name",
        "app",
    ]);
    assert!(String::from_utf8_lossy(&again.stdout).starts_with("updated git mirror app"));
    let other = env.path("other");
    fs::create_dir_all(&other).unwrap();
    git(&other, &["init", "-q"]);
    env.kiln_refused(
        &[
            "mirror",
            "git",
            "add",
            other.to_str().unwrap(),
            "--name",
            "app",
        ],
        "is already bound to",
    );
    env.kiln_refused(
        &[
            "mirror",
            "git",
            "add",
            "https://example.com/r.git",
            "--name",
            "web",
        ],
        "clone it with git first",
    );
    assert!(!env.data_dir().join("git/web.git").exists());
    // An allowed-signers file kiln cannot honour exactly is refused before anything is written.
    let signers = env.write(
        "signers",
        "ca@example.com cert-authority ssh-ed25519 AAAA\n",
    );
    env.kiln_refused(
        &[
            "mirror",
            "git",
            "add",
            origin.to_str().unwrap(),
            "--name",
            "lib",
            "--allowed-signers",
            signers.to_str().unwrap(),
        ],
        "line 1: option \"cert-authority\" is not supported",
    );
    assert!(!env.data_dir().join("git/lib.git").exists());
    let listed = env.kiln_ok(&["mirror", "git", "list"]);
    assert_eq!(String::from_utf8_lossy(&listed.stdout).lines().count(), 1);
}

/// A fresh Ed25519 key at `DIR/NAME`; its public key line.
fn keygen(env: &Env, name: &str) -> String {
    let path = env.path(name);
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path)
        .output()
        .expect("run ssh-keygen");
    assert!(out.status.success(), "{}", text(&out));
    fs::read_to_string(path.with_extension("pub")).unwrap()
}

fn signed_commit(origin: &Path, key: &Path, message: &str) -> String {
    let signing = format!("user.signingkey={}", key.display());
    git(
        origin,
        &[
            "-c",
            "gpg.format=ssh",
            "-c",
            &signing,
            "commit",
            "-q",
            "-S",
            "--allow-empty",
            "-m",
            message,
        ],
    );
    git(origin, &["rev-parse", "HEAD"])
}

#[test]
fn with_allowed_signers_only_their_signed_commits_run_and_the_signer_is_recorded() {
    let env = Env::new();
    env.import_busybox();
    let (origin, unsigned) = repo(&env, "signed\n");
    let alice = keygen(&env, "alice");
    keygen(&env, "mallory");
    let good = signed_commit(&origin, &env.path("alice"), "by alice");
    let bad = signed_commit(&origin, &env.path("mallory"), "by mallory");
    let mut fields = alice.split_whitespace();
    let line = format!(
        "alice@example.com {} {}\n",
        fields.next().unwrap(),
        fields.next().unwrap()
    );
    let signers = env.write("allowed_signers", &line);
    add_mirror(
        &env,
        &origin,
        &["--allowed-signers", signers.to_str().unwrap()],
    );

    let out = env.run(&env.write("good.yaml", &pipeline(&good, None)));
    assert!(out.status.success(), "{}", text(&out));
    let dep = git_dependency(&statement(&env.path("out"), "readme"));
    assert_eq!(dep["annotations"]["signer"], "alice@example.com");
    assert!(
        dep["annotations"]["signerKey"]
            .as_str()
            .unwrap()
            .starts_with("SHA256:")
    );

    let shown = refused(&env, "unsigned.yaml", &pipeline(&unsigned, None));
    assert!(shown.contains("is not signed"), "{shown}");
    let shown = refused(&env, "mallory.yaml", &pipeline(&bad, None));
    assert!(shown.contains("which is not an allowed signer"), "{shown}");
    // Fetched again without --allowed-signers: the policy stays.
    add_mirror(&env, &origin, &[]);
    let shown = refused(&env, "unsigned-again.yaml", &pipeline(&unsigned, None));
    assert!(shown.contains("is not signed"), "{shown}");
}

cluster_tests! {
    submitted_runs_stage_git_sources_on_workers_and_refuse_bad_pins;
}

fn submitted_runs_stage_git_sources_on_workers_and_refuse_bad_pins(backend: Backend) {
    let mut cluster = Cluster::start_on(30, backend);
    let (origin, commit) = repo(&cluster.env, "from the daemon\n");
    cluster.kiln_ok(&[
        "mirror",
        "git",
        "add",
        origin.to_str().unwrap(),
        "--name",
        "app",
    ]);
    cluster.worker("w1", 1);

    let run = cluster.submit("src.yaml", &pipeline(&commit, Some("main")));
    cluster.wait_for(&run, Duration::from_secs(120), "the run to finish", |v| {
        v["state"] != "running"
    });
    let view = cluster.status(&run);
    assert_eq!(view["state"], "succeeded", "{view:#}\n{}", cluster.logs());
    let out_dir = cluster.env.path("artifacts");
    cluster.kiln_ok(&["artifacts", &run, "--out", out_dir.to_str().unwrap()]);
    assert_eq!(
        fs::read_to_string(out_dir.join("readme")).unwrap(),
        "from the daemon\n"
    );
    let dep = git_dependency(&statement(&out_dir, "readme"));
    assert_eq!(dep["digest"]["gitCommit"], commit.as_str());

    let absent = "0123456789abcdef0123456789abcdef01234567";
    let file = cluster.env.write("absent.yaml", &pipeline(absent, None));
    let out = cluster.kiln(&["submit", file.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("422") || text(&out).contains("does not exist"),
        "{}",
        text(&out)
    );
    assert!(text(&out).contains("does not exist"), "{}", text(&out));
}
