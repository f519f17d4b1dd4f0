//! Shared by the daemon's in-process API tests (`http_api`, `observability`, `openapi`): the
//! data dir every one of them starts from.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use kiln_core::MirrorRef;
use kiln_daemon::state::Database;
use time::OffsetDateTime;

/// `make` (reads `words@1`) → `wrap`, publishing `wrap`'s output as artifact `wrapped`.
pub const TWO_STEPS: &str = "\
version: 1
name: two
rootfs: busybox@1
inputs:
  words: { mirror: words@1 }
steps:
  - name: make
    inputs: [words]
    run: cat /in/words/words.txt > /out/greeting
    outputs: [greeting]
  - name: wrap
    needs: [make]
    run: cat /in/make/greeting > /out/wrapped
    outputs: [wrapped]
artifacts:
  - { name: wrapped, from: wrap, path: wrapped }
";

/// Fills the data dir `data` (state on `db`, or its own SQLite file) with a rootfs `busybox@1`
/// and, with `words`, a file input `words@1` (content `hello`) in its mirror; both are made in
/// `scratch` first.
pub async fn seed_mirror(data: &Path, db: Option<&Database>, scratch: &Path, words: bool) {
    let controller = kiln_daemon::Controller::open_with(data, db).await.unwrap();
    let rootfs = scratch.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::write(rootfs.join("bin/sh"), b"not really a shell").unwrap();
    controller
        .mirror_add_tree(&rootfs, "busybox@1".parse::<MirrorRef>().unwrap(), false)
        .await
        .unwrap();
    if words {
        let words = scratch.join("words.txt");
        std::fs::write(&words, b"hello").unwrap();
        controller
            .mirror_add_file(&words, "words@1".parse().unwrap(), None)
            .await
            .unwrap();
    }
    controller.state().close().await;
}

/// A bearer token for `team` valid for `ttl`, made like `kiln admin token create`.
pub async fn team_token(data: &Path, db: Option<&Database>, team: &str, ttl: Duration) -> String {
    let controller = kiln_daemon::Controller::open_with(data, db).await.unwrap();
    let secret = kiln_daemon::state::random_secret().unwrap();
    let made = controller
        .state()
        .create_team_token(team, &secret, ttl, OffsetDateTime::now_utc())
        .await
        .unwrap();
    controller.state().close().await;
    made.token
}
