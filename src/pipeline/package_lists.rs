//! Packages in a build: every element's `package-installs` and `pkg-map`,
//! read and parsed once on the host side ([`PackageLists::read`]), and
//! evaluated in pid 1 after environment.d is sourced, as DIB's
//! package-installs-squash does; and `-p`.

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};

use anyhow::{Context as _, Result};
use serde::{Deserialize, Serialize};

use super::executor::{Build, Stop};
use crate::elements::Resolution;
use crate::packages::{Entry, PkgMap};
use crate::phases::Phase;

/// Every element's package lines and pkg-map, parsed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PackageLists {
    pub entries: Vec<Entry>,
    pub maps: BTreeMap<String, PkgMap>,
    /// What parsing found questionable, logged in the build.
    pub warnings: Vec<String>,
}

impl PackageLists {
    /// Read and parse every element's `package-installs.yaml` (or `.json`,
    /// which YAML parses too) and `pkg-map`, so a mistake in one stops the
    /// build before anything runs.
    pub fn read(resolution: &Resolution) -> Result<PackageLists> {
        let mut lists = PackageLists::default();
        for e in &resolution.elements {
            let text = ["package-installs.yaml", "package-installs.json"]
                .iter()
                .find_map(|f| fs::read_to_string(e.path.join(f)).ok());
            if let Some(text) = text {
                let (found, warnings) = crate::packages::parse(&e.name, &text)?;
                lists.entries.extend(found);
                lists.warnings.extend(warnings);
            }
            if let Ok(text) = fs::read_to_string(e.path.join("pkg-map")) {
                lists
                    .maps
                    .insert(e.name.clone(), PkgMap::parse(&e.name, &text)?);
            }
        }
        Ok(lists)
    }
}

/// The phase whose view of the environment package lists are evaluated in.
const SQUASH_PHASE: Phase = Phase::ExtraData;

impl Build<'_> {
    /// What environment.d decides once extra-data.d has run, as DIB's
    /// install-types and package-installs do at the end of that phase: the
    /// chosen install types linked into install.d, and the package lists
    /// (through the pkg-maps) squashed into per-phase files in the hook tree
    /// for the package-installs element's hooks, with each element's pkg-map
    /// table for the pkg-map element.
    pub fn write_package_lists(&self) -> Result<()> {
        use crate::packages::{plan, Context};
        let env = self.sourced_env()?;
        *self.sourced.borrow_mut() = Some(env.clone());
        let installtypes = crate::hooks::InstallTypes::from_env(
            env.get("DIB_DEFAULT_INSTALLTYPE")
                .map_or("source", String::as_str),
            &env,
        );
        for note in self
            .job
            .hooks
            .link_install_types(&self.dirs.hooks, &installtypes)?
        {
            self.log.line(&format!("warning: {note}"));
        }
        let lists = &self.job.package_lists;
        for w in &lists.warnings {
            self.log.line(&format!("warning: {w}"));
        }
        if lists.entries.is_empty() && lists.maps.is_empty() {
            return Ok(());
        }
        self.write_pkg_map_tables(&lists.maps, &env)?;
        let ctx = Context {
            arch: env.get("ARCH").map_or("", String::as_str),
            env: &env,
            installtypes: &installtypes,
        };
        let p = plan(&lists.entries, &lists.maps, &ctx)?;
        let dir = self.dirs.hooks.join("dib-package-installs");
        fs::create_dir_all(&dir).with_context(|| format!("creating {dir:?}"))?;
        let write = |name: String, items: &[(String, String)]| -> Result<()> {
            let text: String = items.iter().map(|(p, e)| format!("{p} {e}\n")).collect();
            let path = dir.join(name);
            fs::write(&path, text).with_context(|| format!("writing {path:?}"))
        };
        for (phase, items) in &p.install {
            write(format!("{phase}.install"), items)?;
        }
        for (phase, items) in &p.uninstall {
            write(format!("{phase}.uninstall"), items)?;
        }
        write("build-only".to_string(), &p.build_only)?;
        Ok(())
    }

    /// The environment hooks see once `environment.d` is sourced (outside
    /// phases' view).
    fn sourced_env(&self) -> Result<BTreeMap<String, String>> {
        // The environment goes to a file, not stdout, which environment.d
        // files may write to.
        let dump = self.dirs.build.join(".dib-environment");
        let mut cmd = Command::new("/bin/bash");
        cmd.args([
            "-c",
            "set -eu\nfor __f; do . \"$__f\"; done\nenv -0 > \"$DIB_ENV_DUMP\"",
            "dib-environment",
        ])
        .args(self.env_files(SQUASH_PHASE)?)
        .env_clear()
        .envs(self.env(SQUASH_PHASE))
        .env("DIB_ENV_DUMP", &dump)
        .stdin(Stdio::null());
        // environment.d is the elements' code: it runs in their box.
        self.fresh_boxes();
        self.place(&mut cmd, SQUASH_PHASE, None)?;
        let out = cmd.output().context("sourcing environment.d")?;
        dib_sandbox::init::kill_all_and_reap();
        if !out.status.success() {
            anyhow::bail!(
                "sourcing environment.d failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let bytes = fs::read(&dump).with_context(|| format!("reading {dump:?}"))?;
        let _ = fs::remove_file(&dump);
        Ok(bytes
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                let (k, v) = kv.split_once('=')?;
                (k != "DIB_ENV_DUMP").then(|| (k.to_string(), v.to_string()))
            })
            .collect())
    }

    /// Every element's pkg-map resolved for this build's distribution, as
    /// `generic<TAB>name` lines in `dib-pkg-map/<element>` of the hook tree.
    fn write_pkg_map_tables(
        &self,
        maps: &BTreeMap<String, PkgMap>,
        env: &BTreeMap<String, String>,
    ) -> Result<()> {
        if maps.is_empty() {
            return Ok(());
        }
        let distro = crate::packages::Distro::from_env(env);
        let dir = self.dirs.hooks.join("dib-pkg-map");
        fs::create_dir_all(&dir).with_context(|| format!("creating {dir:?}"))?;
        for (element, m) in maps {
            let mut text = String::new();
            for generic in m.generic_names() {
                let mapped = m.map(&generic, &distro).unwrap_or_default();
                text.push_str(&format!("{generic}\t{mapped}\n"));
            }
            let path = dir.join(element);
            fs::write(&path, text).with_context(|| format!("writing {path:?}"))?;
        }
        Ok(())
    }

    /// `-p`: the image's install-packages, after install.d, as DIB's -p.
    pub fn install_extra_packages(&self) -> Result<(), Stop> {
        const TOOL: &str = "usr/local/sbin/install-packages";
        let packages = &self.job.packages;
        let present = dib_sandbox::mounts::inside(&self.dirs.mnt, "usr/local/sbin")
            .map(|d| d.join("install-packages").is_file())
            .unwrap_or(false);
        if !present {
            return Err(Stop::Failed(anyhow::anyhow!(
                "-p {}: the image has no /{TOOL}; include an element that provides it \
                 (dpkg, which debian-minimal pulls in)",
                packages.join(",")
            )));
        }
        self.log
            .line(&format!("installing -p packages: {}", packages.join(" ")));
        self.log
            .status(format!("install.d: -p {}", packages.join(" ")));
        let mut cmd = Command::new(format!("/{TOOL}"));
        cmd.args(packages)
            .env_clear()
            .envs(self.env(Phase::Install))
            .stdin(Stdio::null());
        self.fresh_boxes();
        self.place(&mut cmd, Phase::Install, None)?;
        self.run_logged(cmd, "installing the -p packages")?;
        dib_sandbox::init::kill_all_and_reap();
        Ok(())
    }
}
