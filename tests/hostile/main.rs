//! The attack suite (issue 3): each test runs one attack as a real pipeline step through
//! `kiln run` and asserts both that it failed and how: the errno the probe got inside the
//! step (published as the step's `verdict` artifact), the error `kiln run` reports for the
//! step, or what the host observes afterwards (a listener that got nothing, no surviving
//! process).
//!
//! The inside half is `probe.c`, a static C program with one subcommand per attack; it prints
//! `DENIED <attack>: <ERRNO> …` and exits 0 when the attack was stopped, `ALLOWED …` and 1 when
//! it succeeded. Tests that need a hardening feature which has not landed yet carry
//! `#[ignore = "needs …"]` with their final assertion.

#[path = "../e2e/common/mod.rs"]
mod common;
mod support;

mod filesystem;
mod information;
mod network;
mod privilege;
mod resources;
