//! A step cannot reach the host's network, write its rootfs or inputs, or smuggle a pointer
//! into the host out through /out — each proven through `kiln run`.

mod common;

use std::net::{TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::{Env, text};

#[test]
fn step_cannot_connect_to_host_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();

    // Outside the sandbox, the same busybox command reaches the listener.
    let mut outside = Command::new("/bin/busybox")
        .args(["nc", "-w", "2", "127.0.0.1", &port.to_string()])
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (accepted, _) = listener.accept().expect("the host-side connection arrived");
    drop(accepted);
    assert!(
        outside.wait().unwrap().success(),
        "nc outside the sandbox failed"
    );
    listener.set_nonblocking(true).unwrap();

    let env = Env::new();
    env.import_busybox();
    let pipeline = env.write(
        "net.yaml",
        &format!(
            "version: 1\nname: net\nrootfs: busybox@1\nsteps:\n  - name: connect\n    run: nc -w 2 127.0.0.1 {port} </dev/null\n"
        ),
    );
    let out = env.run(&pipeline);
    assert!(
        !out.status.success(),
        "the connection from inside must fail:\n{}",
        text(&out)
    );
    assert!(text(&out).contains("[FAIL] connect"), "{}", text(&out));
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        listener.accept().is_err(),
        "no connection may reach the host listener from a step"
    );
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "the listener is still up"
    );
}

fn single_step(env: &Env, run: &str) -> std::process::Output {
    env.import_busybox();
    let src = env.write("src/data.txt", "input\n");
    env.kiln_ok(&["mirror", "add", src.to_str().unwrap(), "--name", "data@1"]);
    let pipeline = env.write(
        "p.yaml",
        &format!(
            "version: 1\nname: p\nrootfs: busybox@1\ninputs:\n  data: {{ mirror: data@1 }}\nsteps:\n  - name: attempt\n    inputs: [data]\n    run: '{run}'\n"
        ),
    );
    env.run(&pipeline)
}

#[test]
fn step_cannot_write_to_rootfs() {
    let env = Env::new();
    let out = single_step(&env, "touch /bin/evil");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Read-only file system"),
        "{}",
        text(&out)
    );
    assert!(!env.path("busybox-rootfs/bin/evil").exists());
}

#[test]
fn step_cannot_write_to_an_input() {
    let env = Env::new();
    let out = single_step(&env, "echo tampered > /in/data/data.txt");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("Read-only file system"),
        "{}",
        text(&out)
    );
}

#[test]
fn step_can_read_its_input() {
    let env = Env::new();
    let out = single_step(&env, "grep -q input /in/data/data.txt");
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn symlink_to_etc_passwd_in_out_fails_the_run() {
    let env = Env::new();
    env.import_busybox();
    let pipeline = env.write(
        "p.yaml",
        "version: 1\nname: p\nrootfs: busybox@1\nsteps:\n  - name: leak\n    run: ln -s /etc/passwd /out/passwd && echo hi > /out/ok\n    outputs: [ok]\n",
    );
    let out = env.run(&pipeline);
    assert!(!out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(
        all.contains("/out/passwd is a symlink (to /etc/passwd)"),
        "{all}"
    );
}

#[test]
fn failed_step_skips_its_dependents() {
    let env = Env::new();
    env.import_busybox();
    let pipeline = env.write(
        "p.yaml",
        "version: 1\nname: p\nrootfs: busybox@1\nsteps:\n  - name: first\n    run: exit 3\n  - name: second\n    needs: [first]\n    run: 'true'\n",
    );
    let out = env.run(&pipeline);
    assert!(!out.status.success());
    let all = text(&out);
    assert!(all.contains("exited with status 3"), "{all}");
    assert!(all.contains("[skip] second"), "{all}");
}

#[test]
fn timeout_fails_the_step() {
    let env = Env::new();
    env.import_busybox();
    let pipeline = env.write(
        "p.yaml",
        "version: 1\nname: p\nrootfs: busybox@1\nsteps:\n  - name: slow\n    run: sleep 100\n    timeout: 1s\n",
    );
    let started = std::time::Instant::now();
    let out = env.run(&pipeline);
    assert!(!out.status.success());
    assert!(text(&out).contains("timed out after 1s"), "{}", text(&out));
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the run must not wait for sleep 100"
    );
}
