//! dib-sandbox: everything in dib that touches isolation or privilege.
//!
//! A security reviewer audits this crate alone: the `dib` crate decides what
//! to do, and only code here may change what a process is allowed to do.
//! Planned modules (see docs/ARCHITECTURE.md): `ns` (user, mount and pid
//! namespaces, id maps, chroot, pid 1), `proto` and `client` (the helper's
//! typed socket protocol), and the `dib-helper` binary's server.
//!
//! Today it holds the skeleton of the helper's command line.

/// Version of the helper protocol spoken by this build; the `Hello` handshake
/// compares it.
pub const PROTOCOL_VERSION: u32 = 1;
