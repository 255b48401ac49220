//! Break shells: an interactive shell at a `break=` point, in the chroot
//! for chroot phases, with the phase's environment.

use std::process::Command;

use anyhow::Context as _;
use dib_sandbox::init::{exit_code, reap_zombies};

use super::executor::{Build, Stop};
use crate::phases::Phase;

impl Build<'_> {
    /// An interactive shell at a break point, in the chroot for chroot
    /// phases.
    pub fn shell(&self, phase: Phase, label: &str) -> Result<(), Stop> {
        self.log.line(&format!(
            "break={label}: starting a shell{}; exit it to go on",
            if phase.chroot() {
                " in the chroot"
            } else {
                " in the build directory"
            }
        ));
        let mut env = self.env(phase);
        env.insert("PS1".into(), format!("dib ({label}) # "));
        let mut cmd = Command::new(self.interpreter(phase));
        cmd.arg("-i").env_clear().envs(&env);
        self.fresh_boxes();
        self.place(&mut cmd, phase, None)?;
        let status = self
            .log
            .suspend(|| cmd.status())
            .context("starting the break shell")?;
        reap_zombies();
        self.check_stopped()?;
        if !status.success() {
            return Err(Stop::Failed(anyhow::anyhow!(
                "the break shell exited with status {}: stopping the build",
                exit_code(status)
            )));
        }
        Ok(())
    }
}
