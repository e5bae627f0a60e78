//! Tests of the fallback chain, each step on a machine made in a temporary
//! directory (root, sysfs path, release and arch injected through [`BtfSearch`]),
//! and the helpers the other `btf` tests share.

use super::archive::{self, Embedded};
use super::chain::*;
use super::{image, BtfError, BtfSource, KernelBtf, SYSFS_VMLINUX};
use crate::btf::decompress::tests::lz4_legacy_frame;
use crate::btf::image::tests::{bzimage, elf_with_btf, vmlinux};
use std::path::{Path, PathBuf};

/// A directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sonde-btf-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    pub(crate) fn write(&self, rel: &str, data: &[u8]) -> PathBuf {
        let path = self.0.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, data).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const RELEASE: &str = "6.1.0-56-cloud-amd64";

/// Raw BTF that aya parses (a kernel object's types).
fn btf() -> Vec<u8> {
    crate::btf::extract_btf_section(elf_with_btf()).unwrap()
}

/// A machine with nothing on it: no sysfs file, no images, Debian 12 os-release.
fn machine(root: &TempDir) -> BtfSearch {
    root.write("etc/os-release", b"ID=debian\nVERSION_ID=\"12\"\n");
    BtfSearch {
        explicit: None,
        archive: None,
        sysfs: root.path().join("sys/kernel/btf/vmlinux"),
        root: root.path().to_path_buf(),
        release: RELEASE.into(),
        machine: "x86_64".into(),
        embedded: &[],
    }
}

fn outcomes(btf: &KernelBtf) -> Vec<(Step, Outcome)> {
    btf.chain().iter().map(|a| (a.step, a.outcome)).collect()
}

#[test]
fn sysfs_first_when_nothing_is_given() {
    let root = TempDir::new("sysfs");
    let s = machine(&root);
    root.write("sys/kernel/btf/vmlinux", &btf());
    root.write(&format!("boot/vmlinuz-{RELEASE}"), b"never read");
    let got = s.locate().unwrap();
    assert_eq!(got.source(), &BtfSource::Sysfs(s.sysfs.clone()));
    assert_eq!(got.source().kind(), "sysfs");
    assert_eq!(got.release(), RELEASE);
    assert_eq!(got.size(), btf().len());
    use Outcome::*;
    assert_eq!(
        outcomes(&got),
        [
            (Step::Explicit, Skipped),
            (Step::Sysfs, Found),
            (Step::ExplicitDir, Skipped),
            (Step::Embedded, Skipped),
            (Step::Archive, Skipped),
            (Step::Image, Skipped),
            (Step::Dwarf, Skipped),
        ]
    );
}

#[test]
fn explicit_file_wins_over_sysfs_and_may_be_an_elf() {
    let root = TempDir::new("explicit");
    root.write("sys/kernel/btf/vmlinux", &btf());
    let elf = root.write("my/vmlinux", elf_with_btf());
    let got = machine(&root).explicit(Some(&elf)).locate().unwrap();
    assert_eq!(got.source(), &BtfSource::Explicit(elf));
    assert_eq!(got.chain()[0].outcome, Outcome::Found);
    assert!(
        got.chain()[0].why.contains("ELF .BTF"),
        "{:?}",
        got.chain()[0]
    );
    assert_eq!(got.chain()[1].outcome, Outcome::Skipped);
}

#[test]
fn a_bad_explicit_file_is_an_error_not_a_fallback() {
    let root = TempDir::new("badexplicit");
    root.write("sys/kernel/btf/vmlinux", &btf());
    let missing = root.path().join("nope.btf");
    let e = machine(&root)
        .explicit(Some(&missing))
        .locate()
        .unwrap_err();
    assert!(matches!(e, BtfError::Explicit { .. }));
    assert!(e.to_string().contains("nope.btf: not found"), "{e}");
    let junk = root.write("junk.btf", b"\x9f\xeb\x01\0junk");
    let e = machine(&root).explicit(Some(&junk)).locate().unwrap_err();
    assert!(
        e.to_string().contains(
            "junk.btf: corrupt BTF (8 bytes via raw BTF): header: 8 bytes, shorter than the 24-byte BTF header"
        ),
        "{e}"
    );
}

#[test]
fn a_damaged_btf_is_refused_with_where_and_what() {
    let root = TempDir::new("damaged");
    let mut raw = btf();
    // The first type's name offset, past the strings.
    raw[24..28].copy_from_slice(&u32::MAX.to_le_bytes());
    let bad = root.write("bad.btf", &raw);
    let e = machine(&root).explicit(Some(&bad)).locate().unwrap_err();
    assert!(
        e.to_string().contains(&format!(
            "bad.btf: corrupt BTF ({} bytes via raw BTF): type [1] at byte 24: ",
            raw.len()
        )),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("name offset 4294967295 is past the string section"),
        "{e}"
    );
    // In an archive directory it is a step tried, and the chain goes on.
    root.write("sys/kernel/btf/vmlinux", &raw);
    root.write(&format!("mine/{RELEASE}.btf"), &btf());
    let got = machine(&root)
        .explicit(Some(&root.path().join("mine")))
        .locate()
        .unwrap();
    assert_eq!(got.chain()[1].outcome, Outcome::Tried);
    assert!(
        got.chain()[1].why.starts_with("corrupt BTF"),
        "{:?}",
        got.chain()[1]
    );
    assert_eq!(got.source().kind(), "explicit");
}

#[test]
fn devices_and_fifos_are_refused_at_once() {
    let root = TempDir::new("special");
    let fifo = root.path().join("fifo.btf");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    for (path, what) in [
        (fifo.as_path(), "a FIFO"),
        (Path::new("/dev/zero"), "a character device"),
    ] {
        let t = std::time::Instant::now();
        let e = machine(&root).explicit(Some(path)).locate().unwrap_err();
        assert!(
            e.to_string()
                .contains(&format!("not a regular file ({what})")),
            "{e}"
        );
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
    }
    // sysfs itself a FIFO: tried, not waited on.
    let sys = root.path().join("sys/kernel/btf");
    std::fs::create_dir_all(&sys).unwrap();
    let c = std::ffi::CString::new(sys.join("vmlinux").to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    let e = machine(&root).locate().unwrap_err();
    assert!(e.to_string().contains("not a regular file (a FIFO)"), "{e}");
}

#[test]
fn explicit_directory_comes_after_sysfs() {
    let root = TempDir::new("explicitdir");
    let s = machine(&root);
    root.write(&format!("mine/{RELEASE}.btf"), &btf());
    let dir = root.path().join("mine");
    let got = s.clone().explicit(Some(&dir)).locate().unwrap();
    assert_eq!(
        got.source(),
        &BtfSource::Explicit(dir.join(format!("{RELEASE}.btf")))
    );
    assert_eq!(got.chain()[2].step, Step::ExplicitDir);
    root.write("sys/kernel/btf/vmlinux", &btf());
    let got = s.explicit(Some(&dir)).locate().unwrap();
    assert_eq!(got.source().kind(), "sysfs");
}

#[test]
fn embedded_archive_matches_this_kernel() {
    let root = TempDir::new("embedded");
    let mut s = machine(&root);
    let entry = xz_cli(&btf()).unwrap_or_else(|| {
        crate::testkit::skip(
            "embedded_archive_matches_this_kernel (xz entry)",
            "no xz command (apt-get install xz-utils); a raw BTF entry instead",
        );
        btf()
    });
    let entry: &'static [u8] = Box::leak(entry.into_boxed_slice());
    let table: Embedded = Box::leak(Box::new([
        (
            "debian/11/x86_64/5.10.0-46-cloud-amd64.btf.xz",
            &b"other kernel"[..],
        ),
        ("debian/12/x86_64/6.1.0-56-cloud-amd64.btf.xz", entry),
    ]));
    s.embedded = table;
    let got = s.locate().unwrap();
    assert_eq!(
        got.source(),
        &BtfSource::Embedded("debian/12/x86_64/6.1.0-56-cloud-amd64.btf.xz".into())
    );
    assert_eq!(got.size(), btf().len());
    assert_eq!(got.os(), Some("debian 12"));
    let found = &got.chain()[3];
    assert_eq!(
        (found.step, found.outcome),
        (Step::Embedded, Outcome::Found)
    );
    assert!(
        found
            .why
            .ends_with("matched by os-release, arch and release"),
        "{}",
        found.why
    );
    // In a container: os-release is the image's, the kernel the node's.
    root.write("etc/os-release", b"ID=alpine\nVERSION_ID=3.20.0\n");
    let got = s.locate().unwrap();
    assert_eq!(got.source().kind(), "embedded");
    assert!(
        got.chain()[3].why.contains("by arch and release only"),
        "{:?}",
        got.chain()[3]
    );
    // Another kernel: the miss names what the binary has.
    root.write("etc/os-release", b"ID=debian\nVERSION_ID=12\n");
    s.release = "6.1.0-99-cloud-amd64".into();
    let e = s.locate().unwrap_err().to_string();
    assert!(
        e.contains("embedded:debian/12/x86_64/6.1.0-99-cloud-amd64.btf.xz"),
        "{e}"
    );
    assert!(
        e.contains("it has debian/11/x86_64/5.10.0-46-cloud-amd64"),
        "{e}"
    );
}

/// `xz` of `data` when the command exists (the decoder itself is tested on
/// committed streams); raw BTF entries are read the same way otherwise.
fn xz_cli(data: &[u8]) -> Option<Vec<u8>> {
    let mut c = std::process::Command::new("xz")
        .arg("-c")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    std::io::Write::write_all(c.stdin.as_mut()?, data).ok()?;
    drop(c.stdin.take());
    let out = c.wait_with_output().ok()?;
    out.status.success().then_some(out.stdout)
}

#[test]
fn archive_directory_default_and_configured() {
    let root = TempDir::new("archivedir");
    let s = machine(&root);
    let e = s.locate().unwrap_err();
    let BtfError::NotFound { attempts, .. } = &e else {
        panic!("{e}")
    };
    let archive = attempts.iter().find(|a| a.step == Step::Archive).unwrap();
    assert_eq!(archive.outcome, Outcome::Skipped);
    assert!(
        archive.why.contains("var/lib/sonde/btf does not exist"),
        "{}",
        archive.why
    );

    let path = root.write(
        &format!("var/lib/sonde/btf/debian/12/x86_64/{RELEASE}.btf"),
        &btf(),
    );
    let got = s.locate().unwrap();
    assert_eq!(got.source(), &BtfSource::Archive(path));

    let other = root.path().join("elsewhere");
    let e = s
        .clone()
        .archive(Some(&other))
        .locate()
        .unwrap_err()
        .to_string();
    assert!(e.contains("elsewhere: not a directory"), "{e}");
    let path = root.write(&format!("elsewhere/{RELEASE}.btf"), &btf());
    assert_eq!(
        s.archive(Some(&other)).locate().unwrap().source(),
        &BtfSource::Archive(path)
    );
}

#[test]
fn kernel_image_lz4_vmlinuz() {
    let root = TempDir::new("image");
    let s = machine(&root);
    let img = bzimage(&lz4_legacy_frame(&vmlinux(RELEASE), 8 << 20));
    let path = root.write(&format!("boot/vmlinuz-{RELEASE}"), &img);
    let got = s.locate().unwrap();
    assert_eq!(got.source(), &BtfSource::Image(path));
    assert_eq!(got.source().kind(), "image");
    let found = got
        .chain()
        .iter()
        .find(|a| a.outcome == Outcome::Found)
        .unwrap();
    assert!(
        found.why.contains("bzImage > lz4 legacy > ELF .BTF"),
        "{}",
        found.why
    );
    // Every image path before it was looked at.
    let images: Vec<&Attempt> = got
        .chain()
        .iter()
        .filter(|a| a.step == Step::Image)
        .collect();
    assert_eq!(images.len(), 5, "{images:#?}");
}

#[test]
fn debug_vmlinux_before_vmlinuz() {
    let root = TempDir::new("debugimage");
    let s = machine(&root);
    root.write(&format!("boot/vmlinuz-{RELEASE}"), b"not read");
    let path = root.write(
        &format!("usr/lib/debug/boot/vmlinux-{RELEASE}"),
        elf_with_btf(),
    );
    assert_eq!(s.locate().unwrap().source(), &BtfSource::Image(path));
    let root = TempDir::new("modimage");
    let s = machine(&root);
    let path = root.write(
        &format!("lib/modules/{RELEASE}/vmlinux.elf"),
        elf_with_btf(),
    );
    assert_eq!(s.locate().unwrap().source(), &BtfSource::Image(path));
}

#[test]
fn an_image_of_another_kernel_is_refused() {
    let root = TempDir::new("wrongimage");
    let s = machine(&root);
    // Named for this release, built for another.
    let img = bzimage(&lz4_legacy_frame(
        &vmlinux("5.10.0-46-cloud-amd64"),
        8 << 20,
    ));
    root.write(&format!("boot/vmlinuz-{RELEASE}"), &img);
    let e = s.locate().unwrap_err().to_string();
    assert!(
        e.contains("the image is for kernel 5.10.0-46-cloud-amd64, this is 6.1.0-56-cloud-amd64"),
        "{e}"
    );
}

#[test]
fn a_miss_lists_every_path_and_how_to_provide_btf() {
    let root = TempDir::new("miss");
    let s = machine(&root);
    root.write(
        &format!("usr/lib/debug/boot/vmlinux-{RELEASE}"),
        b"\x7fELF truncated",
    );
    let e = s.locate().unwrap_err();
    let text = e.to_string();
    let r = root.path().display().to_string();
    for path in [
        format!("{r}/sys/kernel/btf/vmlinux"),
        format!("{r}/boot/vmlinux-{RELEASE}"),
        format!("{r}/usr/lib/debug/boot/vmlinux-{RELEASE}"),
        format!("{r}/usr/lib/debug/lib/modules/{RELEASE}/vmlinux"),
        format!("{r}/lib/modules/{RELEASE}/vmlinux"),
        format!("{r}/boot/vmlinuz-{RELEASE}"),
    ] {
        assert!(text.contains(&path), "{path} missing from:\n{text}");
    }
    assert!(text.contains("not a readable ELF"), "{text}");
    assert!(
        text.contains("no kernel image of this release with DWARF and no .BTF"),
        "{text}"
    );
    for how in [
        "--btf FILE",
        "`btf:`",
        "--btf-archive DIR",
        "linux-image-6.1.0-56-cloud-amd64-dbg,",
    ] {
        assert!(text.contains(how), "{how} missing from:\n{text}");
    }
    assert!(
        text.starts_with("no kernel BTF for 6.1.0-56-cloud-amd64 (x86_64, debian 12)"),
        "{text}"
    );
    let BtfError::NotFound { attempts, .. } = e else {
        unreachable!()
    };
    assert!(attempts.iter().all(|a| a.outcome != Outcome::Found));
    assert_eq!(attempts.last().unwrap().step, Step::Dwarf);
}

/// The archive this binary embeds (btfhub/archive): every entry is laid out
/// `<ID>/<VERSION_ID>/<arch>/<release>.btf[.xz]`, decompresses and parses, and a
/// machine of that distribution and kernel without sysfs BTF finds it.
#[test]
fn the_embedded_archive_serves_its_kernels() {
    let table = archive::embedded();
    if table.is_empty() {
        crate::testkit::skip(
            "the_embedded_archive_serves_its_kernels",
            "built without btfhub/archive (part of the repository: CI must embed it)",
        );
        return;
    }
    for (key, bytes) in table {
        let parts: Vec<&str> = key.split('/').collect();
        let [id, version, arch, file] = parts[..] else {
            panic!("{key}: not <ID>/<VERSION_ID>/<arch>/<release>.btf[.xz]");
        };
        let release = file.trim_end_matches(".xz").trim_end_matches(".btf");
        let root = TempDir::new("embedded-real");
        root.write(
            "etc/os-release",
            format!("ID={id}\nVERSION_ID=\"{version}\"\n").as_bytes(),
        );
        let s = BtfSearch {
            explicit: None,
            archive: None,
            sysfs: root.path().join("sys/kernel/btf/vmlinux"),
            root: root.path().to_path_buf(),
            release: release.into(),
            machine: arch.into(),
            embedded: table,
        };
        let got = s.locate().unwrap_or_else(|e| panic!("{key}: {e}"));
        assert_eq!(got.source(), &BtfSource::Embedded(key.to_string()));
        assert_eq!(got.release(), release);
        let raw = image::extract(bytes).unwrap();
        assert_eq!(raw.btf.len(), got.size());
    }
}

/// The running machine: sysfs (when it exists) is found, and quickly.
#[test]
fn this_machine() {
    if !Path::new(SYSFS_VMLINUX).exists() {
        crate::testkit::skip("this_machine", &format!("no {SYSFS_VMLINUX}"));
        return;
    }
    let got = BtfSearch::system().locate().unwrap();
    assert_eq!(got.source().kind(), "sysfs");
    assert_eq!(got.release(), crate::bpf::features::kernel_release());
    assert!(got.has_struct("sk_buff"));
}

/// A debug image with DWARF and no `.BTF` (here a `clang -g` object standing in for a
/// debug vmlinux): the image step cannot use it, the DWARF step converts it.
#[test]
fn a_debug_image_without_btf_is_converted_from_dwarf() {
    let test = "a_debug_image_without_btf_is_converted_from_dwarf";
    let root = TempDir::new("dwarfimage");
    let s = machine(&root);
    let src = root.write(
        "src/k.c",
        b"struct sock { int a; unsigned b : 3; struct sock *next; };\nstruct sock s;\n",
    );
    let path = root.0.join(format!("usr/lib/debug/boot/vmlinux-{RELEASE}"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let out = std::process::Command::new("clang")
        .args(["-g", "-O0", "-c", "-o"])
        .arg(&path)
        .arg(&src)
        .output();
    if !out.as_ref().is_ok_and(|o| o.status.success()) {
        crate::testkit::skip(test, &format!("clang could not compile: {out:?}"));
        return;
    }
    let got = s.locate().unwrap();
    assert_eq!(got.source(), &BtfSource::Image(path));
    let last = got
        .chain()
        .iter()
        .rev()
        .find(|a| a.outcome == Outcome::Found)
        .unwrap();
    assert_eq!(last.step, Step::Dwarf, "{last}");
    assert!(last.why.contains("DWARF to BTF"), "{last}");
    assert!(got.has_struct("sock"));
    let image = got
        .chain()
        .iter()
        .find(|a| a.step == Step::Image && a.location.contains("usr/lib/debug/boot"))
        .unwrap();
    assert!(
        image
            .why
            .contains("it has DWARF: the dwarf step converts it"),
        "{image}"
    );
}
