//! Running a build.
//!
//! On the host ([`host`]): check, make the [`job::BuildJob`] (plain data)
//! and start the sandbox. Inside ([`pid1`]): pid 1 turns the job into a
//! [`plan`] of steps and the [`executor`] runs them; each step's work is in
//! [`steps`] and the modules by subject: hooks ([`run_hooks`], their
//! [`environment`], the [`chroot`], their shell [`runtime`]), [`breaks`] shells, [`package_lists`], the [`disk`] image,
//! [`outputs`]; [`log`] is the build's log.

pub mod boxing;
pub mod breaks;
pub mod chroot;
pub mod disk;
pub mod environment;
pub mod executor;
pub mod host;
pub mod job;
pub mod layers;
pub mod log;
pub mod outputs;
pub mod package_lists;
pub mod pid1;
pub mod plan;
pub mod reproducible;
pub mod run_hooks;
pub mod runtime;
pub mod steps;

pub use host::{run, Reported};
pub use job::NO_FINAL_IMAGE;
pub use pid1::{init_main, supervise_main, INIT_CMD, SUPERVISE_CMD};
