//! The fallback chain: where sonde looks for the running kernel's BTF, in order.
//!
//! 1. **explicit file** (`--btf FILE`, config `btf:`): the user named this BTF, so it
//!    wins over everything, sysfs included (to test a tailored BTF, or to work
//!    around a broken one). A file that does not hold usable BTF is an error, not a
//!    silent fallback.
//! 2. **sysfs** `/sys/kernel/btf/vmlinux`: the kernel's own, always right when it
//!    exists.
//! 3. **explicit directory** (`--btf DIR`): searched like an archive directory
//!    (below) and for `<release>.btf[.xz]`. A directory is a collection for a fleet,
//!    so it comes after sysfs.
//! 4. **embedded archive**: the tailored BTFs built into this binary
//!    ([`super::archive`]), matched by os-release, arch and `uname -r`.
//! 5. **archive directory** (`--btf-archive DIR`, config `btf_archive:`, else
//!    `/var/lib/sonde/btf` when it exists): same layout, for kernels the binary
//!    does not know.
//! 6. **kernel images** for the running release: `/boot/vmlinux-<release>`,
//!    `/usr/lib/debug/boot/vmlinux-<release>`,
//!    `/usr/lib/debug/lib/modules/<release>/vmlinux`, `/lib/modules/<release>/vmlinux*`,
//!    `/boot/vmlinuz-<release>` ([`super::image`]: ELF `.BTF`, or a decompressed
//!    `vmlinuz`); an image whose banner names another kernel is refused.
//! 7. **DWARF to BTF**: a debug image of those paths with DWARF but no `.BTF` is
//!    converted ([`super::dwarf`], a pahole `-J` equivalent for what CO-RE needs).
//!
//! Every file is read only when it is a regular file, within the caps of
//! [`super::input`] (`--btf /dev/zero` or a FIFO is an error at once). Every
//! candidate must pass the structural check of [`super::validate`] (a damaged BTF
//! would panic aya at load time) and parse with aya before it is used; one that
//! does not is listed with why, and the chain goes on. Every step is logged (DEBUG per step,
//! INFO for the one used) and kept in [`KernelBtf::chain`] for `sonde btf` and
//! `/status`.
//!
//! ```no_run
//! use sonde::btf::BtfSearch;
//!
//! let btf = BtfSearch::system()
//!     .archive(Some("/var/lib/sonde/btf".as_ref()))
//!     .locate()
//!     .unwrap();
//! println!("{} for {} ({} bytes)", btf.source(), btf.release(), btf.size());
//! for step in btf.chain() {
//!     println!("{step}");
//! }
//! ```

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::archive::{self, Embedded, OsRelease};
use super::image::{self, Extracted};
use super::{BtfError, BtfSource, KernelBtf, SYSFS_VMLINUX};

/// The on-disk archive used when none is configured, if it exists.
pub const DEFAULT_ARCHIVE: &str = "/var/lib/sonde/btf";

/// Setting this to `off` leaves the embedded archive out of the chain (to test the
/// steps after it on a kernel the binary knows).
pub const EMBEDDED_ENV: &str = "SONDE_BTF_EMBEDDED";

/// One step of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    Explicit,
    Sysfs,
    ExplicitDir,
    Embedded,
    Archive,
    Image,
    Dwarf,
}

impl Step {
    pub const ALL: [Step; 7] = [
        Step::Explicit,
        Step::Sysfs,
        Step::ExplicitDir,
        Step::Embedded,
        Step::Archive,
        Step::Image,
        Step::Dwarf,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Step::Explicit => "explicit",
            Step::Sysfs => "sysfs",
            Step::ExplicitDir => "explicit_dir",
            Step::Embedded => "embedded",
            Step::Archive => "archive",
            Step::Image => "image",
            Step::Dwarf => "dwarf",
        }
    }
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

/// What a step did with one location.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Used: this is the kernel's BTF.
    Found,
    /// Looked at, and not there or not usable.
    Tried,
    /// Not looked at: not configured, not applicable, or an earlier step found BTF.
    Skipped,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Outcome::Found => "found",
            Outcome::Tried => "tried",
            Outcome::Skipped => "skipped",
        })
    }
}

/// One line of the chain: a step, the place it looked at, and what came of it.
#[derive(Debug, Clone, Serialize)]
pub struct Attempt {
    pub step: Step,
    /// A path, an embedded key (`embedded:debian/12/...`), or empty.
    pub location: String,
    pub outcome: Outcome,
    pub why: String,
    #[serde(rename = "seconds", serialize_with = "seconds")]
    pub took: Duration,
}

fn seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl std::fmt::Display for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let location = if self.location.is_empty() {
            "-"
        } else {
            &self.location
        };
        write!(
            f,
            "{:<12} {:<7} {location}: {}",
            self.step, self.outcome, self.why
        )?;
        if self.took >= Duration::from_micros(100) {
            write!(f, " ({:.1} ms)", self.took.as_secs_f64() * 1e3)?;
        }
        Ok(())
    }
}

/// Where to look; [`BtfSearch::system`] for this machine, fields overridable (tests
/// point `root` and `sysfs` at a temporary directory).
#[derive(Debug, Clone)]
pub struct BtfSearch {
    /// `--btf` / `btf:`: a BTF file, an ELF, a kernel image, or a directory.
    pub explicit: Option<PathBuf>,
    /// `--btf-archive` / `btf_archive:`; `None`: [`DEFAULT_ARCHIVE`] under `root`
    /// when it exists.
    pub archive: Option<PathBuf>,
    pub sysfs: PathBuf,
    /// Prefix of `/etc/os-release`, `/boot`, `/usr/lib/debug`, `/lib/modules` and
    /// the default archive.
    pub root: PathBuf,
    /// `uname -r`.
    pub release: String,
    /// `uname -m`.
    pub machine: String,
    pub embedded: Embedded,
}

impl BtfSearch {
    /// This machine: its release and arch, `/`, the sysfs file, the embedded
    /// archive (unless `SONDE_BTF_EMBEDDED=off`).
    pub fn system() -> BtfSearch {
        let (release, machine) = uname();
        let embedded = match std::env::var(EMBEDDED_ENV).as_deref() {
            Ok("off") => &[],
            _ => archive::embedded(),
        };
        BtfSearch {
            explicit: None,
            archive: None,
            sysfs: PathBuf::from(SYSFS_VMLINUX),
            root: PathBuf::from("/"),
            release,
            machine,
            embedded,
        }
    }

    pub fn explicit(mut self, path: Option<&Path>) -> BtfSearch {
        self.explicit = path.map(Path::to_path_buf);
        self
    }

    pub fn archive(mut self, dir: Option<&Path>) -> BtfSearch {
        self.archive = dir.map(Path::to_path_buf);
        self
    }

    /// Runs the chain.
    pub fn locate(&self) -> Result<KernelBtf, BtfError> {
        let mut run = Run {
            search: self,
            start: Instant::now(),
            attempts: Vec::new(),
            os: None,
            arches: archive::arch_names(&self.machine),
        };
        tracing::debug!(release = %self.release, machine = %self.machine, explicit = ?self.explicit, "locating kernel BTF");
        for (i, step) in Step::ALL.into_iter().enumerate() {
            let Some(found) = run.step(step)? else {
                continue;
            };
            for later in &Step::ALL[i + 1..] {
                run.record(
                    *later,
                    String::new(),
                    Outcome::Skipped,
                    "an earlier step found BTF".into(),
                    Duration::ZERO,
                );
            }
            let btf = KernelBtf {
                aya: found.aya,
                raw: found.raw,
                types: found.types,
                source: found.source,
                release: found.kernel.unwrap_or_else(|| self.release.clone()),
                machine: self.machine.clone(),
                os: run.os_label(),
                took: run.start.elapsed(),
                chain: run.attempts,
            };
            tracing::info!(
                source = %btf.source,
                release = %btf.release,
                bytes = btf.raw.len(),
                took_ms = btf.took.as_secs_f64() * 1e3,
                "kernel BTF found"
            );
            return Ok(btf);
        }
        Err(BtfError::NotFound {
            release: self.release.clone(),
            machine: self.machine.clone(),
            os: run.os_label(),
            attempts: run.attempts,
        })
    }
}

/// The state of one run of the chain.
struct Run<'a> {
    search: &'a BtfSearch,
    start: Instant,
    attempts: Vec<Attempt>,
    /// `/etc/os-release`, read when a step first needs it.
    os: Option<Result<OsRelease, super::archive::NoOsRelease>>,
    arches: Vec<String>,
}

struct Found {
    aya: aya::Btf,
    raw: Vec<u8>,
    source: BtfSource,
    kernel: Option<String>,
    types: u32,
}

impl Run<'_> {
    fn record(
        &mut self,
        step: Step,
        location: String,
        outcome: Outcome,
        why: String,
        took: Duration,
    ) {
        tracing::debug!(step = %step, location = %location, outcome = %outcome, why = %why, "btf chain step");
        self.attempts.push(Attempt {
            step,
            location,
            outcome,
            why,
            took,
        });
    }

    fn os(&mut self) -> Option<&OsRelease> {
        let root = &self.search.root;
        self.os
            .get_or_insert_with(|| OsRelease::read(root).map(|(os, _)| os))
            .as_ref()
            .ok()
    }

    fn os_label(&mut self) -> Option<String> {
        self.os().map(|o| o.to_string())
    }

    fn step(&mut self, step: Step) -> Result<Option<Found>, BtfError> {
        let s = self.search;
        let explicit_dir = s.explicit.as_ref().filter(|p| p.is_dir());
        Ok(match step {
            Step::Explicit => match (&s.explicit, explicit_dir) {
                (None, _) => self.skip(step, "no --btf or `btf:` given"),
                (Some(_), Some(_)) => {
                    self.skip(step, "--btf names a directory: searched after sysfs")
                }
                (Some(path), None) => return self.explicit_file(path).map(Some),
            },
            Step::Sysfs => self.sysfs(),
            Step::ExplicitDir => match explicit_dir {
                None => self.skip(step, "--btf names no directory"),
                Some(dir) => self.directory(step, dir),
            },
            Step::Embedded => self.embedded(),
            Step::Archive => match &s.archive {
                Some(dir) => self.directory(step, dir),
                None => {
                    let default = s.root.join(DEFAULT_ARCHIVE.trim_start_matches('/'));
                    if default.is_dir() {
                        self.directory(step, &default)
                    } else {
                        let why = format!(
                            "no --btf-archive or `btf_archive:` given, and {} does not exist",
                            default.display()
                        );
                        self.skip(step, &why)
                    }
                }
            },
            Step::Image => self.images(),
            Step::Dwarf => self.dwarf(),
        })
    }

    /// `--btf FILE`: used as asked, or an error naming it (no silent fallback).
    fn explicit_file(&mut self, path: &Path) -> Result<Found, BtfError> {
        let t = Instant::now();
        let release = &self.search.release;
        let fail = |reason: String| BtfError::Explicit {
            path: path.to_path_buf(),
            reason,
        };
        let got = match load(path) {
            Ok(got) => got,
            Err(why) => {
                self.tried(Step::Explicit, path, why.to_string(), t);
                return Err(fail(why.to_string()));
            }
        };
        if let Some(k) = got.kernel.as_ref().filter(|k| *k != release) {
            tracing::warn!(path = %path.display(), image = %k, running = %release, "--btf image is for another kernel; using it as asked");
        }
        let source = BtfSource::Explicit(path.to_path_buf());
        self.accept(Step::Explicit, source, got, t).ok_or_else(|| {
            fail(
                self.attempts
                    .last()
                    .map(|a| a.why.clone())
                    .unwrap_or_default(),
            )
        })
    }

    fn sysfs(&mut self) -> Option<Found> {
        let t = Instant::now();
        let path = &self.search.sysfs;
        match super::input::read_capped(path, super::input::MAX_WHOLE_FILE) {
            Ok(raw) if image::is_raw_btf(&raw) => {
                let got = Extracted {
                    btf: raw,
                    via: vec!["raw BTF"],
                    kernel: None,
                };
                self.accept(Step::Sysfs, BtfSource::Sysfs(path.clone()), got, t)
            }
            Ok(_) => self.tried(Step::Sysfs, path, "not raw BTF".into(), t),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.tried(
                Step::Sysfs,
                path,
                "not found (a kernel without CONFIG_DEBUG_INFO_BTF, or /sys/kernel/btf hidden)"
                    .into(),
                t,
            ),
            Err(e) => self.tried(Step::Sysfs, path, e.to_string(), t),
        }
    }

    /// The archive built into the binary.
    fn embedded(&mut self) -> Option<Found> {
        let t = Instant::now();
        let s = self.search;
        if s.embedded.is_empty() {
            let why = match std::env::var(EMBEDDED_ENV).as_deref() {
                Ok("off") => format!("turned off by {EMBEDDED_ENV}=off"),
                _ => "this binary embeds no BTF (built without btfhub/archive)".into(),
            };
            return self.skip(Step::Embedded, &why);
        }
        let arches = self.arches.clone();
        let os = self.os().cloned();
        let Some((key, bytes, how)) =
            archive::find_embedded(s.embedded, os.as_ref(), &arches, &s.release)
        else {
            let keys = archive::candidates(os.as_ref(), &arches, &s.release);
            let location = match keys.first() {
                Some(k) => format!("embedded:{k}"),
                None => format!("embedded:*/*/{}/{}.btf.xz", s.machine, s.release),
            };
            let known: Vec<&str> = s
                .embedded
                .iter()
                .map(|(k, _)| k.trim_end_matches(".xz").trim_end_matches(".btf"))
                .collect();
            let why = format!("not in the embedded archive (it has {})", known.join(", "));
            return self.tried(Step::Embedded, Path::new(&location), why, t);
        };
        tracing::debug!(key, how = how.describe(), "embedded BTF matched");
        match image::extract(bytes) {
            Ok(got) => {
                let found = self.accept(Step::Embedded, BtfSource::Embedded(key.into()), got, t);
                self.note(&found, how);
                found
            }
            Err(e) => self.tried(
                Step::Embedded,
                Path::new(&format!("embedded:{key}")),
                e.to_string(),
                t,
            ),
        }
    }

    /// Adds how an archive entry was matched to the step that found it.
    fn note(&mut self, found: &Option<Found>, how: archive::Match) {
        if let (Some(_), Some(last)) = (found, self.attempts.last_mut()) {
            last.why = format!("{}; {}", last.why, how.describe());
        }
    }

    fn skip(&mut self, step: Step, why: &str) -> Option<Found> {
        self.record(
            step,
            String::new(),
            Outcome::Skipped,
            why.to_string(),
            Duration::ZERO,
        );
        None
    }

    fn tried(&mut self, step: Step, location: &Path, why: String, t: Instant) -> Option<Found> {
        self.record(
            step,
            location.display().to_string(),
            Outcome::Tried,
            why,
            t.elapsed(),
        );
        None
    }

    /// Parses what a candidate holds; records it as found, or as tried with why.
    fn accept(
        &mut self,
        step: Step,
        source: BtfSource,
        got: Extracted,
        t: Instant,
    ) -> Option<Found> {
        let location = source.location();
        let via = got.via.join(" > ");
        if got.btf.len() > super::input::MAX_BTF {
            let why = format!(
                "{} bytes of BTF via {via}, more than the {} MiB sonde accepts",
                got.btf.len(),
                super::input::MAX_BTF >> 20
            );
            self.record(step, location, Outcome::Tried, why, t.elapsed());
            return None;
        }
        // aya-obj trusts what it relocates against: a damaged BTF must stop here.
        let checked = match super::validate::check(&got.btf) {
            Ok(c) => c,
            Err(e) => {
                let why = format!("corrupt BTF ({} bytes via {via}): {e}", got.btf.len());
                self.record(step, location, Outcome::Tried, why, t.elapsed());
                return None;
            }
        };
        // Contained too: a parser bug on a BTF the check let through is this
        // candidate's failure, not the process's.
        let parsed = crate::panic::catch(|| aya::Btf::parse(&got.btf, aya::Endianness::default()))
            .map_err(|p| format!("the parser failed ({p})"))
            .and_then(|r| r.map_err(|e| e.to_string()));
        match parsed {
            Ok(aya) => {
                let why = format!(
                    "{} bytes via {via}, {} types checked",
                    got.btf.len(),
                    checked.types
                );
                self.record(step, location, Outcome::Found, why, t.elapsed());
                Some(Found {
                    aya,
                    raw: got.btf,
                    source,
                    kernel: got.kernel,
                    types: checked.types,
                })
            }
            Err(e) => {
                let why = format!(
                    "does not parse as BTF ({} via {}): {e}",
                    got.btf.len(),
                    got.via.join(" > ")
                );
                self.record(step, location, Outcome::Tried, why, t.elapsed());
                None
            }
        }
    }

    /// An archive directory: `<ID>/<VERSION_ID>/<arch>/<release>.btf[.xz]`.
    fn directory(&mut self, step: Step, dir: &Path) -> Option<Found> {
        let t = Instant::now();
        if !dir.is_dir() {
            return self.tried(step, dir, "not a directory".into(), t);
        }
        let arches = self.arches.clone();
        let os = self.os().cloned();
        let release = self.search.release.clone();
        let (found, looked) = archive::find_in_dir(dir, os.as_ref(), &arches, &release);
        let Some((path, how)) = found else {
            let why = format!(
                "nothing for {release} ({}); looked at {}",
                os.map(|o| o.to_string())
                    .unwrap_or_else(|| "no os-release".into()),
                looked
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            return self.tried(step, dir, why, t);
        };
        tracing::debug!(path = %path.display(), how = how.describe(), "archive BTF matched");
        match load(&path) {
            Ok(got) => {
                let source = match step {
                    Step::ExplicitDir => BtfSource::Explicit(path),
                    _ => BtfSource::Archive(path),
                };
                let found = self.accept(step, source, got, t);
                self.note(&found, how);
                found
            }
            Err(why) => self.tried(step, &path, why.to_string(), t),
        }
    }

    /// Where kernel images of the running release may be, in the order tried.
    fn image_paths(&self) -> Vec<PathBuf> {
        let s = self.search;
        let r = &s.release;
        let mut paths: Vec<PathBuf> = [
            format!("boot/vmlinux-{r}"),
            format!("usr/lib/debug/boot/vmlinux-{r}"),
            format!("usr/lib/debug/lib/modules/{r}/vmlinux"),
        ]
        .iter()
        .map(|p| s.root.join(p))
        .collect();
        let modules = s.root.join(format!("lib/modules/{r}"));
        let mut in_modules: Vec<PathBuf> = std::fs::read_dir(&modules)
            .map(|rd| {
                rd.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().starts_with("vmlinux"))
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default();
        in_modules.sort();
        if in_modules.is_empty() {
            in_modules.push(modules.join("vmlinux"));
        }
        paths.extend(in_modules);
        paths.push(s.root.join(format!("boot/vmlinuz-{r}")));
        paths
    }

    /// Kernel images of the running release on disk.
    fn images(&mut self) -> Option<Found> {
        let s = self.search;
        let paths = self.image_paths();
        for path in paths {
            let t = Instant::now();
            if !path.exists() {
                self.tried(Step::Image, &path, "not found".into(), t);
                continue;
            }
            let got = match load(&path) {
                Ok(got) => got,
                Err(why) => {
                    self.tried(Step::Image, &path, why.to_string(), t);
                    continue;
                }
            };
            if let Some(k) = got.kernel.as_ref().filter(|k| **k != s.release) {
                let why = format!("the image is for kernel {k}, this is {}", s.release);
                self.tried(Step::Image, &path, why, t);
                continue;
            }
            if let Some(found) = self.accept(Step::Image, BtfSource::Image(path), got, t) {
                return Some(found);
            }
        }
        None
    }
}

impl Run<'_> {
    /// Debug images of the running release with DWARF but no `.BTF`: converted.
    fn dwarf(&mut self) -> Option<Found> {
        let candidates: Vec<PathBuf> = self
            .image_paths()
            .into_iter()
            .filter(|p| image::has_dwarf_without_btf(p))
            .collect();
        if candidates.is_empty() {
            return self.skip(
                Step::Dwarf,
                "no kernel image of this release with DWARF and no .BTF",
            );
        }
        for path in candidates {
            let t = Instant::now();
            let converted = crate::panic::catch(|| super::dwarf::dwarf_file_to_btf(&path));
            let converted = match converted {
                Ok(r) => r,
                Err(p) => {
                    self.tried(
                        Step::Dwarf,
                        &path,
                        format!("the DWARF converter failed: {p}"),
                        t,
                    );
                    continue;
                }
            };
            match converted {
                Ok(btf) => {
                    let got = Extracted {
                        btf,
                        via: vec!["DWARF to BTF"],
                        kernel: None,
                    };
                    if let Some(found) = self.accept(Step::Dwarf, BtfSource::Image(path), got, t) {
                        return Some(found);
                    }
                }
                Err(e) => {
                    self.tried(Step::Dwarf, &path, e.to_string(), t);
                }
            }
        }
        None
    }
}

/// Reads the BTF of a file.
fn load(path: &Path) -> Result<Extracted, Unreadable> {
    image::extract_file(path).map_err(Unreadable)
}

/// A file the chain could not read BTF from: "not found", or the reason.
#[derive(Debug, thiserror::Error)]
struct Unreadable(std::io::Error);

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.kind() {
            std::io::ErrorKind::NotFound => f.write_str("not found"),
            _ => self.0.fmt(f),
        }
    }
}

/// `uname -r` and `uname -m`.
fn uname() -> (String, String) {
    // SAFETY: utsname is plain old data; uname fills it and NUL-terminates each field.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: u is a valid, writable utsname.
    if unsafe { libc::uname(&mut u) } != 0 {
        return (
            crate::bpf::features::kernel_release(),
            std::env::consts::ARCH.to_string(),
        );
    }
    let field = |f: &[libc::c_char]| {
        let bytes: Vec<u8> = f
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    };
    (field(&u.release), field(&u.machine))
}
