//! Compiles the seccomp policy (`policy/seccomp.json`) to classic BPF for x86_64 and aarch64,
//! and writes the target's filters, their sha256 and a one-line summary to
//! `$OUT_DIR/seccomp_filters.rs`, which `src/seccomp.rs` includes. A policy that does not parse,
//! names an unknown syscall or is ambiguous fails the build.
//!
//! Output, per architecture, in install order:
//! 1. an ABI guard written here (foreign architecture → kill, x32 → kill, syscall numbers above
//!    the policy's `newest_reviewed` → ENOSYS), followed by seccompiler's program for the
//!    policy's first errno;
//! 2. one seccompiler program per further errno (a seccompiler filter has a single action).
//!
//! The guard only jumps forward within itself and falls through to the program after it, so
//! prepending it leaves seccompiler's relative jumps intact.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use seccompiler::{BpfProgram, TargetArch, sock_filter};
use serde::Deserialize;
use sha2::{Digest, Sha256};

const POLICY: &str = "policy/seccomp.json";

/// The policy file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Policy {
    #[allow(dead_code)]
    comment: Vec<String>,
    default: DefaultAction,
    newest_reviewed: u32,
    #[allow(dead_code)]
    newest_reviewed_comment: String,
    groups: Vec<Group>,
}

#[derive(Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum DefaultAction {
    Allow,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Group {
    name: String,
    comment: String,
    errno: Errno,
    /// Only on these architectures (default: all).
    #[serde(default)]
    arches: Option<Vec<String>>,
    /// Refused whatever their arguments.
    #[serde(default)]
    syscalls: Vec<String>,
    /// Refused when all of a rule's argument conditions hold (seccompiler's rule format).
    #[serde(default)]
    rules: Vec<serde_json::Value>,
}

#[derive(Deserialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Errno {
    #[serde(rename = "EPERM")]
    Perm,
    #[serde(rename = "ENOSYS")]
    NoSys,
}

impl Errno {
    /// Same number on x86_64 and aarch64 (asm-generic).
    fn number(self) -> u32 {
        match self {
            Errno::Perm => 1,
            Errno::NoSys => 38,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Errno::Perm => "EPERM",
            Errno::NoSys => "ENOSYS",
        }
    }
}

// Classic BPF and seccomp constants (<linux/filter.h>, <linux/seccomp.h>, <linux/audit.h>).
const LD_W_ABS: u16 = 0x20;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGT_K: u16 = 0x25;
const JMP_JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Foreign ABI → kill, x32 → kill, numbers newer than the policy → ENOSYS; else fall through.
fn abi_guard(arch: &str, newest: u32) -> Vec<sock_filter> {
    let audit_arch = match arch {
        "x86_64" => 0xc000_003e,
        "aarch64" => 0xc000_00b7,
        other => panic!("no seccomp policy for architecture {other}"),
    };
    let mut prog = vec![
        stmt(LD_W_ABS, DATA_ARCH),
        jump(JMP_JEQ_K, audit_arch, 1, 0),
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, DATA_NR),
    ];
    if arch == "x86_64" {
        prog.push(jump(JMP_JSET_K, X32_SYSCALL_BIT, 0, 1));
        prog.push(stmt(RET_K, RET_KILL_PROCESS));
    }
    prog.push(jump(JMP_JGT_K, newest, 0, 1));
    prog.push(stmt(RET_K, RET_ERRNO | Errno::NoSys.number()));
    prog
}

/// The filters for `arch` in install order, and the summary counts.
fn compile(policy: &Policy, arch: &str) -> (Vec<BpfProgram>, String) {
    let target = TargetArch::try_from(arch).expect("known architecture");
    let mut by_errno: BTreeMap<Errno, Vec<serde_json::Value>> = BTreeMap::new();
    // syscall -> (errno, conditional?), to refuse ambiguous policies.
    let mut seen: BTreeMap<String, (Errno, bool)> = BTreeMap::new();
    let mut unconditional = BTreeMap::<Errno, usize>::new();
    let mut conditional = BTreeMap::<Errno, Vec<String>>::new();
    for group in &policy.groups {
        assert!(
            !group.name.is_empty() && !group.comment.is_empty(),
            "{POLICY}: every group needs a name and a comment"
        );
        if let Some(arches) = &group.arches
            && !arches.iter().any(|a| a == arch)
        {
            continue;
        }
        let rules = by_errno.entry(group.errno).or_default();
        for name in &group.syscalls {
            if let Some(prev) = seen.insert(name.clone(), (group.errno, false)) {
                panic!("{POLICY}: {name} is listed twice (also {prev:?})");
            }
            rules.push(serde_json::json!({ "syscall": name }));
            *unconditional.entry(group.errno).or_default() += 1;
        }
        for rule in &group.rules {
            let name = rule["syscall"]
                .as_str()
                .unwrap_or_else(|| panic!("{POLICY}: group {}: rule without syscall", group.name))
                .to_owned();
            assert!(
                rule.get("args")
                    .is_some_and(|a| a.as_array().is_some_and(|a| !a.is_empty())),
                "{POLICY}: rule for {name} has no args: list it under syscalls instead"
            );
            match seen.get(&name) {
                Some((errno, true)) if *errno == group.errno => {}
                Some(prev) => panic!("{POLICY}: {name} is both conditional and not ({prev:?})"),
                None => {
                    seen.insert(name.clone(), (group.errno, true));
                    conditional.entry(group.errno).or_default().push(name);
                }
            }
            rules.push(rule.clone());
        }
    }
    let mut programs = Vec::new();
    for (errno, rules) in by_errno {
        let json = serde_json::json!({
            "filter": {
                "default_action": "allow",
                "filter_action": { "errno": errno.number() },
                "filter": rules,
            }
        });
        let text = json.to_string();
        let mut map = seccompiler::compile_from_json(text.as_bytes(), target)
            .unwrap_or_else(|err| panic!("{POLICY} for {arch}: {err}"));
        programs.push(map.remove("filter").expect("the one filter"));
    }
    let mut guard = abi_guard(arch, policy.newest_reviewed);
    guard.append(&mut programs[0]);
    programs[0] = guard;
    let total: usize = programs.iter().map(Vec::len).sum();
    assert!(
        total < 4096,
        "{POLICY}: {total} BPF instructions, the kernel takes 4096"
    );
    assert_eq!(
        programs
            .iter()
            .map(|p| p.last().map(|i| (i.code, i.k)))
            .collect::<Vec<_>>(),
        vec![Some((RET_K, RET_ALLOW)); programs.len()],
        "every program ends by allowing what it did not match"
    );
    let mut summary = String::from("deny-list, default allow: ");
    let errnos: std::collections::BTreeSet<_> =
        unconditional.keys().chain(conditional.keys()).collect();
    for errno in errnos {
        let n = unconditional.get(errno).copied().unwrap_or(0);
        let _ = write!(summary, "{n} syscall{}", if n == 1 { "" } else { "s" });
        if let Some(names) = conditional.get(errno) {
            let _ = write!(summary, " + {} by argument", names.join(", "));
        }
        let _ = write!(summary, " -> {}; ", errno.name());
    }
    let _ = write!(
        summary,
        "nr > {} -> ENOSYS; foreign arch{} -> kill",
        policy.newest_reviewed,
        if arch == "x86_64" { ", x32" } else { "" }
    );
    (programs, summary)
}

/// sha256 over each program as installed: its length (u16 LE, as in `sock_fprog`), then each
/// `struct sock_filter` (code u16 LE, jt, jf, k u32 LE).
fn digest(programs: &[BpfProgram]) -> String {
    let mut hasher = Sha256::new();
    for program in programs {
        hasher.update((program.len() as u16).to_le_bytes());
        for insn in program {
            hasher.update(insn.code.to_le_bytes());
            hasher.update([insn.jt, insn.jf]);
            hasher.update(insn.k.to_le_bytes());
        }
    }
    hasher.finalize().iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn main() {
    println!("cargo::rerun-if-changed={POLICY}");
    println!("cargo::rerun-if-changed=build.rs");
    let text = std::fs::read_to_string(POLICY).expect("read the seccomp policy");
    let policy: Policy =
        serde_json::from_str(&text).unwrap_or_else(|err| panic!("{POLICY}: {err}"));
    assert!(policy.default == DefaultAction::Allow);
    let target = std::env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets the target arch");
    let mut out = None;
    // Compile for both architectures, so a policy that only works on one fails here.
    for arch in ["x86_64", "aarch64"] {
        let compiled = compile(&policy, arch);
        if arch == target {
            out = Some(compiled);
        }
    }
    let (programs, summary) =
        out.unwrap_or_else(|| panic!("no seccomp policy for target architecture {target}"));
    let mut rs = String::from(
        "// @generated by sandbox/build.rs from sandbox/policy/seccomp.json: do not edit.\n\n",
    );
    let _ = writeln!(rs, "/// The filters, in install order.");
    let _ = writeln!(rs, "pub(crate) const FILTERS: &[&[sock_filter]] = &[");
    for program in &programs {
        rs.push_str("    &[\n");
        for i in program {
            let _ = writeln!(
                rs,
                "        sock_filter {{ code: {:#06x}, jt: {}, jf: {}, k: {:#010x} }},",
                i.code, i.jt, i.jf, i.k
            );
        }
        rs.push_str("    ],\n");
    }
    rs.push_str("];\n");
    let _ = writeln!(
        rs,
        "/// sha256 of [`FILTERS`] as installed.\npub(crate) const SHA256: &str = {:?};",
        digest(&programs)
    );
    let _ = writeln!(
        rs,
        "/// One-line summary of the policy for this architecture.\npub(crate) const SUMMARY: &str = {summary:?};"
    );
    let path = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(path.join("seccomp_filters.rs"), rs).expect("write the compiled filters");
}
