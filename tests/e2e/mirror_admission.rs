//! Admission evidence beyond a plain signature, through the real binary: kiln provenance for
//! bytes kiln built (chains, not links), Sigstore bundles, licenses under the policy, the
//! Debian packages of a root filesystem, and `kiln mirror fetch`. Every refusal stores nothing.

mod common;

use std::path::{Path, PathBuf};

use base64::Engine as _;
use common::openssl::{openssl, openssl_key, openssl_sign, openssl_sign_der};
use common::{Env, text};

/// Builds `lib` from `lib-src@1` in busybox.
const LIB: &str = "version: 1\nname: lib\nrootfs: busybox@1\ninputs:\n  src: { mirror: lib-src@1 }\nsteps:\n  - name: build\n    inputs: [src]\n    run: cat /in/src/lib.txt > /out/lib; echo built >> /out/lib\n    outputs: [lib]\nartifacts:\n  - { name: lib, from: build, path: lib }\n";

fn add(env: &Env, path: &Path, name: &str, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["mirror", "add", path.to_str().unwrap(), "--name", name];
    args.extend_from_slice(extra);
    env.kiln(&args)
}

/// The catalogue listing and the store's blob files: what "nothing stored" is checked against.
fn stored(env: &Env) -> (String, Vec<PathBuf>) {
    let list = text(&env.kiln_ok(&["mirror", "list"]));
    let mut blobs: Vec<PathBuf> = walk(&env.data_dir().join("store"))
        .into_iter()
        .filter(|p| !p.starts_with(env.data_dir().join("store/locks")))
        .collect();
    blobs.sort();
    (list, blobs)
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut dirs = vec![dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Runs `attempt`, which must be refused with `expected` in its error, storing nothing.
fn assert_refused_storing_nothing(
    env: &Env,
    expected: &str,
    attempt: impl FnOnce() -> std::process::Output,
) -> std::process::Output {
    let before = stored(env);
    let out = attempt();
    assert!(!out.status.success(), "admitted: {}", text(&out));
    assert!(text(&out).contains(expected), "{}", text(&out));
    assert_eq!(stored(env), before, "a refusal changed the store");
    out
}

/// Writes the data dir's `mirror-policy.yaml` (creating the data dir first).
fn set_policy(env: &Env, policy: &str) {
    env.kiln_ok(&["mirror", "list"]);
    std::fs::write(env.data_dir().join("mirror-policy.yaml"), policy).unwrap();
}

/// busybox, `lib-src@1`, and a run that builds `out/lib` with its provenance.
fn built_lib(env: &Env) -> (PathBuf, PathBuf) {
    env.import_busybox();
    let src = env.write("src/lib.txt", "lib source\n");
    assert!(add(env, &src, "lib-src@1", &[]).status.success());
    let pipeline = env.write("lib.yaml", LIB);
    let out = env.run(&pipeline);
    assert!(out.status.success(), "{}", text(&out));
    (env.path("out/lib"), env.path("out/lib.intoto.jsonl"))
}

#[test]
fn kiln_built_bytes_are_admitted_on_provenance_that_verifies_with_their_dependencies() {
    let env = Env::new();
    let (lib, provenance) = built_lib(&env);
    let out = add(
        &env,
        &lib,
        "lib@1",
        &["--provenance", provenance.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out));
    let show = text(&env.kiln_ok(&["mirror", "show", "lib@1"]));
    assert!(
        show.contains("built by:  kiln, provenance sha256:"),
        "{show}"
    );
    assert!(show.contains("(this controller)"), "{show}");
    assert!(show.contains("  from:    lib-src@1 sha256:"), "{show}");
    assert!(show.contains("  from:    busybox@1 sha256:"), "{show}");

    // The same bytes without --provenance are recognised as kiln's by digest and checked too.
    let out = add(&env, &lib, "lib@2", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let show = text(&env.kiln_ok(&["mirror", "show", "lib@2"]));
    assert!(show.contains("built by:  kiln"), "{show}");

    // Provenance that is not about these bytes is refused.
    let other = env.write("other.bin", "not the library\n");
    assert_refused_storing_nothing(&env, "does not verify with a trusted builder key", || {
        add(
            &env,
            &other,
            "lib@3",
            &["--provenance", provenance.to_str().unwrap()],
        )
    });
}

#[test]
fn a_kiln_built_input_whose_dependency_is_not_in_this_mirror_is_refused() {
    // Built on one controller...
    let builder = Env::new();
    let (lib, provenance) = built_lib(&builder);
    // ...offered to another that trusts that builder's key but holds none of its inputs.
    let env = Env::new();
    let builder_pub = env.write("builder.pub", &text(&builder.kiln_ok(&["keys", "public"])));
    set_policy(
        &env,
        &format!(
            "builders:\n  ci: {{ key: \"{}\" }}\nrules:\n  - names: \"lib\"\n    require_provenance: true\n    builders: [ci]\n",
            builder_pub.display()
        ),
    );
    let args = ["--provenance", provenance.to_str().unwrap()];
    let out =
        assert_refused_storing_nothing(&env, "its dependency", || add(&env, &lib, "lib@1", &args));
    assert!(
        text(&out).contains("is not in this mirror"),
        "{}",
        text(&out)
    );

    // Once the whole chain is vetted here, the same provenance admits it, naming the builder.
    env.import_busybox();
    let src = env.write("src/lib.txt", "lib source\n");
    assert!(add(&env, &src, "lib-src@1", &[]).status.success());
    let out = add(&env, &lib, "lib@1", &args);
    assert!(out.status.success(), "{}", text(&out));
    let show = text(&env.kiln_ok(&["mirror", "show", "lib@1"]));
    assert!(show.contains("verified with builder ci key"), "{show}");
    // `why` re-verifies it with the key recorded at admission and walks its chain.
    let why = text(&env.kiln_ok(&["mirror", "why", "lib@1"]));
    let lines: Vec<&str> = why.lines().collect();
    assert!(
        lines[0].contains("admitted on its provenance, builder ci")
            && lines[0].contains("provenance verified with builder key"),
        "{why}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("  lib-src@1 sha256:") && l.contains("root: admitted")),
        "{why}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("  busybox@1 sha256:")),
        "{why}"
    );

    // A name whose rule requires provenance is refused without it.
    let plain = env.write("lib.bin", "hand-made library\n");
    assert_refused_storing_nothing(&env, "kiln provenance required", || {
        add(&env, &plain, "lib@2", &[])
    });
}

/// A Sigstore bundle (v0.3 JSON) with a message signature made by openssl over `file`.
fn bundle(env: &Env, key: &Path, file: &Path, out: &str) -> PathBuf {
    let der = openssl_sign_der(key, file);
    let b64 = base64::engine::general_purpose::STANDARD;
    let digest = hex_to_bytes(&common::sha256_file(file));
    let json = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": {"publicKey": {"hint": "some-key"}, "tlogEntries": []},
        "messageSignature": {
            "messageDigest": {"algorithm": "SHA2_256", "digest": b64.encode(digest)},
            "signature": b64.encode(der),
        },
    });
    env.write(out, &json.to_string())
}

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn a_sigstore_bundle_by_a_trusted_key_is_admitted_and_a_foreign_one_refused() {
    let env = Env::new();
    let file = env.write("gcc.tar", "pretend this is gcc\n");
    let (acme_key, acme_pub) = openssl_key(&env, "acme");
    let (other_key, _) = openssl_key(&env, "other");
    set_policy(
        &env,
        &format!(
            "signers:\n  acme: {{ key: \"{}\" }}\nrules:\n  - names: \"gcc\"\n    require_signature: true\n",
            acme_pub.display()
        ),
    );
    let key = ["--key", acme_pub.to_str().unwrap()];
    let with_bundle = |b: &Path| {
        let mut args = vec!["--bundle", b.to_str().unwrap()];
        args.extend_from_slice(&key);
        add(&env, &file, "gcc@13", &args)
    };
    let foreign = bundle(&env, &other_key, &file, "other.sigstore.json");
    assert_refused_storing_nothing(&env, "signature does not verify over the file", || {
        with_bundle(&foreign)
    });
    let elsewhere = env.write("elsewhere.tar", "some other file\n");
    let wrong = bundle(&env, &acme_key, &elsewhere, "wrong.sigstore.json");
    assert_refused_storing_nothing(&env, "not this file", || with_bundle(&wrong));

    let good = bundle(&env, &acme_key, &file, "gcc.sigstore.json");
    let out = with_bundle(&good);
    assert!(out.status.success(), "{}", text(&out));
    let show = text(&env.kiln_ok(&["mirror", "show", "gcc@13"]));
    assert!(show.contains("signer:    acme key"), "{show}");
    assert!(
        show.contains("bundle:    application/vnd.dev.sigstore.bundle.v0.3+json sha256:"),
        "{show}"
    );
}

#[test]
fn a_certificate_names_the_signer_whose_key_the_policy_trusts() {
    let env = Env::new();
    let file = env.write("gcc.tar", "pretend this is gcc\n");
    let (acme_key, acme_pub) = openssl_key(&env, "acme");
    let cert = env.path("acme.crt");
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        acme_key.to_str().unwrap(),
        "-days",
        "1",
        "-subj",
        "/CN=acme release",
        "-addext",
        "subjectAltName=email:release@acme.example",
        "-out",
        cert.to_str().unwrap(),
    ]);
    let sig = openssl_sign(&env, &acme_key, &file, "gcc.sig");
    set_policy(
        &env,
        &format!(
            "signers:\n  acme: {{ key: \"{}\" }}\nrules:\n  - names: \"gcc\"\n    require_signature: true\n",
            acme_pub.display()
        ),
    );
    let args = [
        "--signature",
        sig.to_str().unwrap(),
        "--certificate",
        cert.to_str().unwrap(),
    ];
    let out = add(&env, &file, "gcc@13", &args);
    assert!(out.status.success(), "{}", text(&out));
    let show = text(&env.kiln_ok(&["mirror", "show", "gcc@13"]));
    assert!(show.contains("signer:    acme key"), "{show}");
    assert!(show.contains("(email:release@acme.example)"), "{show}");
    // The certificate's key must be one the policy trusts, like a --key.
    let (other_key, _) = openssl_key(&env, "other");
    let other_cert = env.path("other.crt");
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        other_key.to_str().unwrap(),
        "-days",
        "1",
        "-subj",
        "/CN=other",
        "-out",
        other_cert.to_str().unwrap(),
    ]);
    let other_sig = openssl_sign(&env, &other_key, &file, "gcc.other.sig");
    let args = [
        "--signature",
        other_sig.to_str().unwrap(),
        "--certificate",
        other_cert.to_str().unwrap(),
    ];
    assert_refused_storing_nothing(&env, "which the rule does not trust", || {
        add(&env, &file, "gcc@14", &args)
    });
}

#[test]
fn licenses_are_decided_by_the_policy_where_known() {
    let env = Env::new();
    let file = env.write("zlib.tar", "pretend this is zlib\n");
    set_policy(
        &env,
        "rules:\n  - names: \"*\"\n    licenses: [MIT, Zlib, Apache-2.0]\n",
    );
    assert_refused_storing_nothing(&env, "license GPL-3.0-only is not allowed", || {
        add(&env, &file, "zlib@1", &["--license", "GPL-3.0-only"])
    });
    let out = add(
        &env,
        &file,
        "zlib@1",
        &["--license", "GPL-3.0-only OR Zlib"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let show = text(&env.kiln_ok(&["mirror", "show", "zlib@1"]));
    assert!(
        show.contains("license:   GPL-3.0-only OR Zlib (operator; license GPL-3.0-only OR Zlib allowed by rule 1"),
        "{show}"
    );
    // Unknown is admitted, and recorded as unknown.
    let out = add(&env, &env.write("x.tar", "x\n"), "x@1", &[]);
    assert!(out.status.success(), "{}", text(&out));
    let show = text(&env.kiln_ok(&["mirror", "show", "x@1"]));
    assert!(show.contains("license:   unknown"), "{show}");
}

/// A small root filesystem recording two Debian packages, one GPL-3+ per its copyright file.
fn rootfs_with_packages(env: &Env) -> PathBuf {
    let root = env.path("rootfs");
    common::busybox_rootfs(&root);
    std::fs::write(
        root.join("etc/kiln-rootfs-packages"),
        "busybox-static 1:1.35.0-4+b3 amd64\nfoo 1.0-1 amd64\n",
    )
    .unwrap();
    let doc = root.join("usr/share/doc/foo");
    std::fs::create_dir_all(&doc).unwrap();
    std::fs::write(
        doc.join("copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n\nFiles: *\nCopyright: 2026 Foo\nLicense: GPL-3+\n",
    )
    .unwrap();
    root
}

#[test]
fn a_rootfs_records_its_packages_and_a_license_rule_refuses_a_package() {
    let env = Env::new();
    let root = rootfs_with_packages(&env);
    let out = env.kiln(&[
        "mirror",
        "import-rootfs",
        root.to_str().unwrap(),
        "--name",
        "base@1",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let show = text(&env.kiln_ok(&["mirror", "show", "base@1"]));
    assert!(
        show.contains("packages:  2 Debian packages (1 with a known license)"),
        "{show}"
    );
    assert!(
        show.contains("  package: foo 1.0-1 amd64 GPL-3.0-or-later"),
        "{show}"
    );
    assert!(
        show.contains("  package: busybox-static 1:1.35.0-4+b3 amd64 license-unknown"),
        "{show}"
    );

    set_policy(&env, "rules:\n  - names: \"*\"\n    licenses: [MIT]\n");
    let import = |path: &Path, name: &str| {
        env.kiln(&[
            "mirror",
            "import-rootfs",
            path.to_str().unwrap(),
            "--name",
            name,
        ])
    };
    assert_refused_storing_nothing(&env, "package foo 1.0-1: refused by rule 1", || {
        import(&root, "base@2")
    });
    // The same rootfs as a tar archive is read before it is stored, too.
    let tar = env.path("rootfs.tar");
    let status = std::process::Command::new("tar")
        .args([
            "-cf",
            tar.to_str().unwrap(),
            "-C",
            root.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    assert_refused_storing_nothing(&env, "package foo 1.0-1: refused by rule 1", || {
        import(&tar, "base@3")
    });
}

/// `python3 -m http.server` on a free loopback port, serving `dir`; killed on drop.
struct HttpServer {
    child: std::process::Child,
    port: u16,
}

impl HttpServer {
    fn serve(dir: &Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Held by `server` at once, so a server that never answers is still killed (drop).
        let server = Self {
            child: std::process::Command::new("python3")
                .args([
                    "-m",
                    "http.server",
                    "--bind",
                    "127.0.0.1",
                    &port.to_string(),
                ])
                .current_dir(dir)
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap(),
            port,
        };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return server;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("http.server did not start");
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn fetch_pins_the_download_by_digest_and_records_where_it_came_from() {
    let env = Env::new();
    let file = env.write("www/zlib-1.3.tar", "pretend this is zlib 1.3\n");
    let digest = common::sha256_file(&file);
    let server = HttpServer::serve(&env.path("www"));
    let url = format!("http://127.0.0.1:{}/zlib-1.3.tar", server.port);
    env.kiln_ok(&["mirror", "list"]);

    let wrong = "0".repeat(64);
    let fetch = |url: &str, name: &str, sha256: &str| {
        env.kiln(&["mirror", "fetch", url, "--name", name, "--sha256", sha256])
    };
    assert_refused_storing_nothing(&env, "was asserted", || fetch(&url, "zlib@1.3", &wrong));
    assert!(
        walk(&env.data_dir().join("tmp")).is_empty(),
        "a download was left behind"
    );

    let out = fetch(&url, "zlib@1.3", &digest);
    assert!(out.status.success(), "{}", text(&out));
    let show = text(&env.kiln_ok(&["mirror", "show", "zlib@1.3"]));
    assert!(show.contains("kind:      file:zlib-1.3.tar"), "{show}");
    assert!(show.contains(&format!("fetched:   {url} at ")), "{show}");
    assert!(
        show.contains(&format!("asserted:  sha256:{digest} by operator")),
        "{show}"
    );
    assert!(
        walk(&env.data_dir().join("tmp")).is_empty(),
        "a download was left behind"
    );

    let missing = format!("http://127.0.0.1:{}/nope.tar", server.port);
    assert_refused_storing_nothing(&env, "the server answered 404", || {
        fetch(&missing, "nope@1", &digest)
    });
}
