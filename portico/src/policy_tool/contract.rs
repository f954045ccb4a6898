//! The WIT contract this `portico` runs (`wit/` of the repository, embedded at build time):
//! copied into new Python and JavaScript projects, and used to build projects that carry
//! no `wit/` of their own.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The world every policy targets.
pub const WORLD: &str = "policy-world";

/// The files of the `portico:policy` package, as (file name, text).
pub const FILES: &[(&str, &str)] = &[
    ("world.wit", include_str!("../../../wit/world.wit")),
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("policy.wit", include_str!("../../../wit/policy.wit")),
    ("keys.wit", include_str!("../../../wit/keys.wit")),
    ("counters.wit", include_str!("../../../wit/counters.wit")),
    ("log.wit", include_str!("../../../wit/log.wit")),
    ("clock.wit", include_str!("../../../wit/clock.wit")),
];

/// Write the package into `dir` (created if missing).
pub fn write_to(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, text) in FILES {
        std::fs::write(dir.join(name), text)?;
    }
    Ok(())
}

/// The package written to a fresh temporary folder, removed when dropped.
pub struct TempWit {
    dir: PathBuf,
}

impl TempWit {
    /// Write the package to a new folder under the system's temporary directory.
    pub fn new() -> io::Result<Self> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!("portico-wit-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let dir = std::env::temp_dir().join(unique);
        write_to(&dir)?;
        Ok(Self { dir })
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.dir
    }
}

impl Drop for TempWit {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_embedded_package_is_the_gateway_s() {
        let world = super::FILES.iter().find(|(name, _)| *name == "world.wit").expect("world.wit").1;
        let package = portico_gateway::policy::WIT_PACKAGE;
        assert!(world.contains(&format!("package {package};")), "world.wit does not declare {package}");
        assert!(world.contains(&format!("world {} {{", super::WORLD)));
    }
}
