//! dib: a rootless disk-image builder compatible with diskimage-builder.
//!
//! This crate is the unprivileged builder: it decides *what* to do (elements,
//! hook tree, phases, plans) and never changes what the process may do; that
//! is the job of the `dib-sandbox` crate. See docs/ARCHITECTURE.md.

pub mod blockdev;
pub mod cli;
pub mod commands;
pub mod config;
pub mod element_info;
pub mod elements;
pub mod hooks;
pub mod lint;
pub mod logging;
pub mod oci;
pub mod packages;
pub mod phases;
pub mod pipeline;
pub mod ramdisk;
pub mod runparts;
pub mod tool;
