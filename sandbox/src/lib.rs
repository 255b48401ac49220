//! dib-sandbox: everything in dib that touches isolation or privilege.
//!
//! A security reviewer audits this crate alone: the `dib` crate decides what
//! to do, and only code here may change what a process is allowed to do.
//! Today: `subid` (subordinate id ranges), `ns` (entering the namespaces
//! from the host side), `init` (pid 1 and the supervisor inside), `mounts`
//! (the chroot's /proc, /sys, /dev and friends), and the skeleton of the
//! helper's command line. The helper's protocol (`proto`, `client`) and its
//! server come with issue #6 (docs/ARCHITECTURE.md).

pub mod init;
pub mod mounts;
pub mod ns;
pub mod subid;

/// Version of the helper protocol this build will speak; its `Hello` handshake
/// compares it.
pub const PROTOCOL_VERSION: u32 = 1;
