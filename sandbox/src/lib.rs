//! dib-sandbox: everything in dib that touches isolation or privilege.
//!
//! A security reviewer audits this crate alone: the `dib` crate decides what
//! to do, and only code here may change what a process is allowed to do.
//! `subid` (subordinate id ranges), `ns` (entering the namespaces from the
//! host side), `init` (pid 1 and the supervisor inside), `mounts` (the
//! chroot's /proc, /sys, /dev and friends); the helper protocol (`proto`,
//! spoken by `client` in dib and by the server in the `dib-helper` crate)
//! and the data it carries (`table`, `mkfs`), which both block-device
//! backends share;
//! `host_tools`, the host tools run and the Debian package of each;
//! `binfmt`, whether the host runs a target architecture's binaries.

pub mod binfmt;
pub mod buildbox;
pub mod client;
pub mod host_tools;
pub mod init;
pub mod mkfs;
pub mod mounts;
pub mod ns;
pub mod proto;
pub mod seccomp;
pub mod subid;
pub mod table;

/// Version of the helper protocol this build will speak; its `Hello` handshake
/// compares it.
pub const PROTOCOL_VERSION: u32 = 1;
