//! Tier 1: the unprivileged tests. Element resolution, the hook tree,
//! run-parts, the element tools and the CLI's output, on fixture trees in
//! temp directories; anyone can run them.

#[path = "../common/mod.rs"]
mod common;

mod cli;
mod commands;
mod create;
mod element_tools;
mod elements;
mod hooks;
mod runparts;
