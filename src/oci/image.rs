//! A container image's metadata and its JSON documents: the config, the
//! manifest and the index of an OCI image layout, written with oci-spec.
//!
//! What goes in the config comes from variables a user or an element's
//! environment.d sets (read after environment.d is sourced):
//!
//! | variable | config field | form |
//! |---|---|---|
//! | `DIB_OCI_CMD` | `Cmd` | words, or a JSON array |
//! | `DIB_OCI_ENTRYPOINT` | `Entrypoint` | words, or a JSON array |
//! | `DIB_OCI_ENV` | `Env` (after a default `PATH`) | `K=V` words, or a JSON array |
//! | `DIB_OCI_LABELS` | `Labels` | `K=V` words, or a JSON object |
//! | `DIB_OCI_WORKDIR` | `WorkingDir` | a path |
//! | `DIB_OCI_USER` | `User` | a user, `uid` or `uid:gid` |
//!
//! `SOURCE_DATE_EPOCH` (seconds) is the image's creation time and the
//! latest mtime of its layer; without it, the build's time.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Context as _, Result};
use oci_spec::image as spec;

use super::platform;
use crate::config::Arch;

/// The PATH of an image that sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The annotation naming an image in a layout's index.
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// What a container image says about itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ImageConfig {
    pub env: Vec<String>,
    pub cmd: Option<Vec<String>>,
    pub entrypoint: Option<Vec<String>>,
    pub labels: BTreeMap<String, String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
}

impl ImageConfig {
    /// From the `DIB_OCI_*` variables of `env`; errors name the variable.
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<ImageConfig> {
        let get = |k: &str| env.get(k).map(|v| v.trim()).filter(|v| !v.is_empty());
        let mut c = ImageConfig {
            env: vec![DEFAULT_PATH.to_string()],
            ..Default::default()
        };
        if let Some(v) = get("DIB_OCI_CMD") {
            c.cmd = Some(words("DIB_OCI_CMD", v)?);
        }
        if let Some(v) = get("DIB_OCI_ENTRYPOINT") {
            c.entrypoint = Some(words("DIB_OCI_ENTRYPOINT", v)?);
        }
        if let Some(v) = get("DIB_OCI_ENV") {
            for kv in words("DIB_OCI_ENV", v)? {
                let Some((k, _)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                    bail!("DIB_OCI_ENV={v:?}: {kv:?} is not NAME=VALUE");
                };
                // A later value of a name replaces the earlier one.
                c.env
                    .retain(|e| e.split_once('=').map(|(n, _)| n) != Some(k));
                c.env.push(kv);
            }
        }
        if let Some(v) = get("DIB_OCI_LABELS") {
            c.labels = if v.starts_with('{') {
                serde_json::from_str(v).with_context(|| {
                    format!("DIB_OCI_LABELS={v:?} is not a JSON object of strings")
                })?
            } else {
                let mut labels = BTreeMap::new();
                for kv in words("DIB_OCI_LABELS", v)? {
                    let Some((k, val)) = kv.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                        bail!("DIB_OCI_LABELS={v:?}: {kv:?} is not NAME=VALUE");
                    };
                    labels.insert(k.to_string(), val.to_string());
                }
                labels
            };
        }
        c.workdir = get("DIB_OCI_WORKDIR").map(str::to_string);
        if let Some(w) = &c.workdir {
            if !w.starts_with('/') {
                bail!("DIB_OCI_WORKDIR={w:?} is not an absolute path");
            }
        }
        c.user = get("DIB_OCI_USER").map(str::to_string);
        Ok(c)
    }
}

/// Whitespace-separated words, or a JSON array of strings (`[...]`).
fn words(var: &str, v: &str) -> Result<Vec<String>> {
    if v.starts_with('[') {
        return serde_json::from_str(v)
            .with_context(|| format!("{var}={v:?} is not a JSON array of strings"));
    }
    Ok(v.split_whitespace().map(str::to_string).collect())
}

/// `SOURCE_DATE_EPOCH` of `env`, when set.
pub fn source_date_epoch(env: &BTreeMap<String, String>) -> Result<Option<u64>> {
    match env.get("SOURCE_DATE_EPOCH").map(|v| v.trim()) {
        None | Some("") => Ok(None),
        Some(v) => v.parse().map(Some).with_context(|| {
            format!("SOURCE_DATE_EPOCH={v:?} is not a number of seconds since 1970")
        }),
    }
}

/// Seconds since 1970 as RFC 3339 (UTC).
pub fn rfc3339(secs: u64) -> String {
    let (y, m, d) = crate::pipeline::outputs::civil_from_days((secs / 86_400) as i64);
    let t = secs % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// A blob of a layout: its media type, digest and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blob {
    pub media_type: spec::MediaType,
    pub digest: String,
    pub size: u64,
}

impl Blob {
    fn descriptor(&self) -> Result<spec::Descriptor> {
        let digest: oci_spec::image::Digest = self
            .digest
            .parse()
            .with_context(|| format!("the digest {:?} (internal error)", self.digest))?;
        Ok(spec::DescriptorBuilder::default()
            .media_type(self.media_type.clone())
            .digest(digest)
            .size(self.size)
            .build()?)
    }
}

/// The image's config document.
pub fn config_json(
    arch: Arch,
    created: u64,
    config: &ImageConfig,
    diff_id: &str,
    created_by: &str,
) -> Result<Vec<u8>> {
    let (architecture, variant) = platform(arch);
    let mut c = spec::ConfigBuilder::default().env(config.env.clone());
    if let Some(cmd) = &config.cmd {
        c = c.cmd(cmd.clone());
    }
    if let Some(e) = &config.entrypoint {
        c = c.entrypoint(e.clone());
    }
    if !config.labels.is_empty() {
        let labels: HashMap<String, String> = config.labels.clone().into_iter().collect();
        c = c.labels(labels);
    }
    if let Some(w) = &config.workdir {
        c = c.working_dir(w.clone());
    }
    if let Some(u) = &config.user {
        c = c.user(u.clone());
    }
    let when = rfc3339(created);
    let mut b = spec::ImageConfigurationBuilder::default()
        .architecture(spec::Arch::from(architecture))
        .os(spec::Os::Linux)
        .created(when.clone())
        .config(c.build()?)
        .rootfs(
            spec::RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![diff_id.to_string()])
                .build()?,
        )
        .history(vec![spec::HistoryBuilder::default()
            .created(when)
            .created_by(created_by.to_string())
            .build()?]);
    if let Some(v) = variant {
        b = b.variant(v.to_string());
    }
    to_json(&b.build()?)
}

/// The manifest of an image of one layer.
pub fn manifest_json(config: &Blob, layer: &Blob) -> Result<Vec<u8>> {
    let m = spec::ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(spec::MediaType::ImageManifest)
        .config(config.descriptor()?)
        .layers(vec![layer.descriptor()?])
        .build()?;
    to_json(&m)
}

/// A layout's index.json: the one manifest, named `ref_name`, for `arch`.
pub fn index_json(manifest: &Blob, ref_name: &str, arch: Arch) -> Result<Vec<u8>> {
    let (architecture, variant) = platform(arch);
    let mut platform = spec::PlatformBuilder::default()
        .architecture(spec::Arch::from(architecture))
        .os(spec::Os::Linux);
    if let Some(v) = variant {
        platform = platform.variant(v.to_string());
    }
    let mut d = manifest.descriptor()?;
    d.set_platform(Some(platform.build()?));
    d.set_annotations(Some(HashMap::from([(
        REF_NAME.to_string(),
        ref_name.to_string(),
    )])));
    let i = spec::ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(spec::MediaType::ImageIndex)
        .manifests(vec![d])
        .build()?;
    to_json(&i)
}

/// The `oci-layout` file.
pub const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// Serialise with keys in a fixed order (maps sorted), so the same image
/// gives the same bytes.
fn to_json<T: serde::Serialize>(v: &T) -> Result<Vec<u8>> {
    let value = serde_json::to_value(v)?;
    Ok(serde_json::to_vec(&sorted(value))?)
}

fn sorted(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Object(m) => {
            let b: BTreeMap<String, Value> = m.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(b.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        v => v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_config_comes_from_dib_oci_variables() {
        let c = ImageConfig::from_env(&env(&[
            ("DIB_OCI_CMD", r#"["/bin/sh", "-c", "echo hi"]"#),
            ("DIB_OCI_ENTRYPOINT", "/usr/bin/env -i"),
            ("DIB_OCI_ENV", "LANG=C.UTF-8 PATH=/bin"),
            ("DIB_OCI_LABELS", "org.example.a=1 b=two"),
            ("DIB_OCI_WORKDIR", "/srv"),
            ("DIB_OCI_USER", "1000:1000"),
        ]))
        .unwrap();
        assert_eq!(c.cmd.unwrap(), ["/bin/sh", "-c", "echo hi"]);
        assert_eq!(c.entrypoint.unwrap(), ["/usr/bin/env", "-i"]);
        assert_eq!(c.env, ["LANG=C.UTF-8", "PATH=/bin"]);
        assert_eq!(c.labels["org.example.a"], "1");
        assert_eq!(c.labels["b"], "two");
        assert_eq!(c.workdir.as_deref(), Some("/srv"));
        assert_eq!(c.user.as_deref(), Some("1000:1000"));
        let plain = ImageConfig::from_env(&env(&[])).unwrap();
        assert_eq!(plain.env, [DEFAULT_PATH]);
        assert_eq!(plain.cmd, None);
    }

    #[test]
    fn bad_variables_are_named() {
        for (k, v, want) in [
            (
                "DIB_OCI_CMD",
                "[1, 2]",
                "DIB_OCI_CMD=\"[1, 2]\" is not a JSON array of strings",
            ),
            (
                "DIB_OCI_ENV",
                "LANG",
                "DIB_OCI_ENV=\"LANG\": \"LANG\" is not NAME=VALUE",
            ),
            (
                "DIB_OCI_LABELS",
                "{x",
                "DIB_OCI_LABELS=\"{x\" is not a JSON object of strings",
            ),
            (
                "DIB_OCI_WORKDIR",
                "srv",
                "DIB_OCI_WORKDIR=\"srv\" is not an absolute path",
            ),
        ] {
            let e = ImageConfig::from_env(&env(&[(k, v)])).unwrap_err();
            assert_eq!(e.to_string(), want);
        }
        let e = source_date_epoch(&env(&[("SOURCE_DATE_EPOCH", "yesterday")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "SOURCE_DATE_EPOCH=\"yesterday\" is not a number of seconds since 1970"
        );
    }

    #[test]
    fn documents_name_the_platform_and_the_layer() {
        let layer = Blob {
            media_type: spec::MediaType::ImageLayerGzip,
            digest: crate::oci::digest_of(b"layer"),
            size: 5,
        };
        let cfg = config_json(
            Arch::Armhf,
            0,
            &ImageConfig::default(),
            &crate::oci::digest_of(b"tar"),
            "dib",
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
        assert_eq!(v["architecture"], "arm");
        assert_eq!(v["variant"], "v7");
        assert_eq!(v["os"], "linux");
        assert_eq!(v["created"], "1970-01-01T00:00:00Z");
        assert_eq!(v["rootfs"]["diff_ids"][0], crate::oci::digest_of(b"tar"));
        let config = Blob {
            media_type: spec::MediaType::ImageConfig,
            digest: crate::oci::digest_of(&cfg),
            size: cfg.len() as u64,
        };
        let m = manifest_json(&config, &layer).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&m).unwrap();
        assert_eq!(v["layers"][0]["digest"], layer.digest);
        assert_eq!(
            v["config"]["mediaType"],
            "application/vnd.oci.image.config.v1+json"
        );
        let manifest = Blob {
            media_type: spec::MediaType::ImageManifest,
            digest: crate::oci::digest_of(&m),
            size: m.len() as u64,
        };
        let i = index_json(&manifest, "latest", Arch::Amd64).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&i).unwrap();
        assert_eq!(v["manifests"][0]["annotations"][REF_NAME], "latest");
        assert_eq!(v["manifests"][0]["platform"]["architecture"], "amd64");
        assert_eq!(rfc3339(1_764_806_400 + 3_661), "2025-12-04T01:01:01Z");
    }
}
