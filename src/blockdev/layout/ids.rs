//! The identifiers a layout gives its disk, partitions and filesystems:
//! random, or derived from a seed for reproducible images.

/// Random UUIDs for every filesystem and partition that has none: the only
/// input of [`super::plan`] that is not deterministic, so tests pass their own.
pub trait Ids {
    fn uuid(&mut self) -> String;
    fn vfat_id(&mut self) -> String;
}

/// Fresh random identifiers.
#[derive(Debug, Default)]
pub struct RandomIds;

impl Ids for RandomIds {
    fn uuid(&mut self) -> String {
        uuid::Uuid::new_v4().to_string()
    }
    fn vfat_id(&mut self) -> String {
        vfat_id_of(uuid::Uuid::new_v4().as_bytes())
    }
}

/// Identifiers derived from a seed (`DIB_IMAGE_UUID_SEED`): the same
/// seed and configuration give the same disk, partition and filesystem
/// identifiers, whichever backend builds the image (reproducible images).
#[derive(Debug)]
pub struct SeededIds {
    seed: String,
    n: u64,
}

impl SeededIds {
    pub fn new(seed: &str) -> Self {
        SeededIds {
            seed: seed.to_string(),
            n: 0,
        }
    }

    fn next(&mut self) -> uuid::Uuid {
        use sha2::Digest as _;
        let mut h = sha2::Sha256::new();
        h.update(self.seed.as_bytes());
        h.update(self.n.to_le_bytes());
        self.n += 1;
        let d = h.finalize();
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[..16]);
        uuid::Builder::from_random_bytes(b).into_uuid()
    }
}

impl Ids for SeededIds {
    fn uuid(&mut self) -> String {
        self.next().to_string()
    }
    fn vfat_id(&mut self) -> String {
        vfat_id_of(self.next().as_bytes())
    }
}

/// A vfat volume id (`XXXX-XXXX`) from the first four bytes of `b`.
fn vfat_id_of(b: &[u8; 16]) -> String {
    format!("{:02X}{:02X}-{:02X}{:02X}", b[0], b[1], b[2], b[3])
}
