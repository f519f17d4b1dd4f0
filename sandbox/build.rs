//! Compiles the seccomp policy (`policy/seccomp.json`) to classic BPF for x86_64 and aarch64,
//! and writes the target's filters, their sha256 and a one-line summary to
//! `$OUT_DIR/seccomp_filters.rs`, which `src/seccomp.rs` includes. A policy that does not parse,
//! names an unknown syscall or is ambiguous fails the build.
//!
//! Output, per architecture: one filter, made of
//! 1. an ABI guard written here (foreign architecture → kill, x32 → kill, syscall numbers above
//!    the policy's `newest_reviewed` → ENOSYS);
//! 2. a binary search, written here, over the numbers of the syscalls the policy names: a
//!    syscall refused whatever its arguments returns its errno at a leaf, one refused by
//!    argument jumps to part 3, any other is allowed;
//! 3. per errno, seccompiler's program for the policy's argument rules of that errno.
//!
//! Why not seccompiler's program for the whole policy: it tests syscalls one after the other,
//! ~330 instructions, and the kernel runs the filter once per syscall number when it is
//! installed (to find the always-allowed ones), which cost the step ~0.3 ms; the search takes
//! ~8 comparisons. Each part only jumps forward, within itself or to the start of a program of
//! part 3; seccompiler's programs keep their own relative jumps. The build checks, with a small
//! BPF interpreter, that the filter decides exactly like seccompiler's linear programs
//! installed one per errno (the previous form) for every syscall number up to the policy's
//! newest and beyond, on both ABIs' edges and a spread of argument values.

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
const JMP_JA: u16 = 0x05;
const JMP_JEQ_K: u16 = 0x15;
const JMP_JGE_K: u16 = 0x35;
const ALU_AND_K: u16 = 0x54;
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
    // The previous form, one seccompiler program per errno: the new filter must decide alike.
    let mut reference: Vec<BpfProgram> = by_errno
        .iter()
        .map(|(errno, rules)| seccompiler_program(rules, *errno, target, arch))
        .collect();
    let mut guard = abi_guard(arch, policy.newest_reviewed);
    guard.append(&mut reference[0]);
    reference[0] = guard;
    let programs = vec![search_program(policy, arch, &seen, &by_errno)];
    check_same_decisions(&reference, &programs[0], arch, policy.newest_reviewed);
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

/// seccompiler's program refusing `rules` with `errno`, allowing everything else.
fn seccompiler_program(
    rules: &[serde_json::Value],
    errno: Errno,
    target: TargetArch,
    arch: &str,
) -> BpfProgram {
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
    map.remove("filter").expect("the one filter")
}

/// The number of syscall `name` on `target`, read back from seccompiler's program for it (its
/// syscall table is private): the first `jeq` after the syscall number is loaded.
fn syscall_number(name: &str, target: TargetArch, arch: &str) -> u32 {
    let rule = serde_json::json!({ "syscall": name });
    let program = seccompiler_program(&[rule], Errno::Perm, target, arch);
    let loaded = program
        .iter()
        .position(|i| (i.code, i.k) == (LD_W_ABS, DATA_NR))
        .expect("seccompiler loads the syscall number");
    let jeq = program[loaded..]
        .iter()
        .find(|i| i.code == JMP_JEQ_K)
        .expect("seccompiler compares the syscall number");
    jeq.k
}

/// What the search does with one syscall number the policy names.
#[derive(Clone, Copy)]
enum Leaf {
    Refuse(Errno),
    /// Refused by argument: run seccompiler's program for this errno's rules.
    ByArgument(Errno),
}

/// Guard, binary search, then seccompiler's programs for the argument rules (module doc).
fn search_program(
    policy: &Policy,
    arch: &str,
    seen: &BTreeMap<String, (Errno, bool)>,
    by_errno: &BTreeMap<Errno, Vec<serde_json::Value>>,
) -> BpfProgram {
    let target = TargetArch::try_from(arch).expect("known architecture");
    let mut leaves: Vec<(u32, Leaf)> = seen
        .iter()
        .map(|(name, &(errno, by_argument))| {
            let leaf = match by_argument {
                true => Leaf::ByArgument(errno),
                false => Leaf::Refuse(errno),
            };
            (syscall_number(name, target, arch), leaf)
        })
        .collect();
    leaves.sort_by_key(|(nr, _)| *nr);
    let mut program = abi_guard(arch, policy.newest_reviewed);
    let base = program.len();
    let (search, patches) = search(&leaves);
    program.extend(search);
    for (errno, rules) in by_errno {
        let argument_rules: Vec<_> = rules
            .iter()
            .filter(|r| r.get("args").is_some())
            .cloned()
            .collect();
        if argument_rules.is_empty() {
            continue;
        }
        let start = program.len();
        for &(at, _) in patches.iter().filter(|(_, e)| e == errno) {
            program[base + at].k = (start - (base + at) - 1) as u32;
        }
        program.extend(seccompiler_program(&argument_rules, *errno, target, arch));
    }
    program
}

/// A binary search over `leaves` (sorted by number; the number is in the accumulator) that
/// allows what it does not find. Returns the code and, for each `ByArgument` leaf, the index of
/// its `ja` and the errno, whose target the caller fills in.
fn search(leaves: &[(u32, Leaf)]) -> (Vec<sock_filter>, Vec<(usize, Errno)>) {
    let mut code = Vec::new();
    let mut patches = Vec::new();
    if leaves.len() <= 4 {
        for &(nr, leaf) in leaves {
            code.push(jump(JMP_JEQ_K, nr, 0, 1));
            match leaf {
                Leaf::Refuse(errno) => code.push(stmt(RET_K, RET_ERRNO | errno.number())),
                Leaf::ByArgument(errno) => {
                    patches.push((code.len(), errno));
                    code.push(stmt(JMP_JA, 0));
                }
            }
        }
        code.push(stmt(RET_K, RET_ALLOW));
        return (code, patches);
    }
    let (low, high) = leaves.split_at(leaves.len() / 2);
    let (low_code, low_patches) = search(low);
    let (high_code, high_patches) = search(high);
    let over = u8::try_from(low_code.len()).expect("a search half fits a BPF jump");
    code.push(jump(JMP_JGE_K, high[0].0, over, 0));
    patches.extend(low_patches.into_iter().map(|(at, e)| (at + 1, e)));
    code.extend(low_code);
    let offset = code.len();
    patches.extend(high_patches.into_iter().map(|(at, e)| (at + offset, e)));
    code.extend(high_code);
    (code, patches)
}

/// Panics unless `program` decides exactly like `reference` (installed together, as the kernel
/// combines filters) for every syscall number up to past `newest`, on both ABI edges, with a
/// spread of argument values.
fn check_same_decisions(
    reference: &[BpfProgram],
    program: &[sock_filter],
    arch: &str,
    newest: u32,
) {
    let native = if arch == "x86_64" {
        0xc000_003e
    } else {
        0xc000_00b7
    };
    let mut values: Vec<u64> = vec![
        0,
        u64::MAX,
        0xffff_ffff,
        0x11,
        0x0008_0000,
        0xffff_ffff_0000_0000,
    ];
    values.extend((0..64).map(|bit| 1u64 << bit));
    values.extend((0..64).map(|bit| (1u64 << bit) | 0x11));
    for audit_arch in [native, 0x4000_0003] {
        for nr in (0..=newest + 8).chain((0..=newest + 8).map(|n| n | X32_SYSCALL_BIT)) {
            for &value in &values {
                let data = SeccompData {
                    nr,
                    arch: audit_arch,
                    args: [value; 6],
                };
                let want = reference
                    .iter()
                    .rev()
                    .map(|p| run_bpf(p, &data))
                    .reduce(|kept, next| {
                        if (next as i32) < (kept as i32) {
                            next
                        } else {
                            kept
                        }
                    })
                    .expect("at least one program");
                let got = run_bpf(program, &data);
                assert_eq!(
                    got, want,
                    "{arch}: nr {nr} arch {audit_arch:#x} args {value:#x}: {got:#x} != {want:#x}"
                );
            }
        }
    }
}

/// `struct seccomp_data`, as far as the filters read it.
struct SeccompData {
    nr: u32,
    arch: u32,
    args: [u64; 6],
}

impl SeccompData {
    /// The 32-bit word at byte `offset` (little-endian, as on x86_64 and aarch64).
    fn word(&self, offset: u32) -> u32 {
        match offset {
            DATA_NR => self.nr,
            DATA_ARCH => self.arch,
            16..=63 => {
                let arg = self.args[(offset as usize - 16) / 8];
                if offset.is_multiple_of(8) {
                    arg as u32
                } else {
                    (arg >> 32) as u32
                }
            }
            other => panic!("the filters read seccomp_data at {other}"),
        }
    }
}

/// Runs a classic BPF program (the instructions these filters use) on `data`.
fn run_bpf(program: &[sock_filter], data: &SeccompData) -> u32 {
    let (mut pc, mut acc) = (0usize, 0u32);
    loop {
        let i = &program[pc];
        let (jt, jf) = (i.jt as usize, i.jf as usize);
        pc += 1;
        match i.code {
            LD_W_ABS => acc = data.word(i.k),
            ALU_AND_K => acc &= i.k,
            JMP_JA => pc += i.k as usize,
            JMP_JEQ_K => pc += if acc == i.k { jt } else { jf },
            JMP_JGT_K => pc += if acc > i.k { jt } else { jf },
            JMP_JGE_K => pc += if acc >= i.k { jt } else { jf },
            JMP_JSET_K => pc += if acc & i.k != 0 { jt } else { jf },
            RET_K => return i.k,
            other => panic!("BPF opcode {other:#x} is not interpreted here; add it"),
        }
    }
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
