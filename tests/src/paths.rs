//! Where things are: the workspace, the run folder of this test process, the Synapse venv.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::{Error, Result};

/// The workspace root (the folder with the top-level `Cargo.toml`).
pub fn workspace_root() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate lives inside the workspace")
            .to_path_buf()
    })
}

/// The folder this test process keeps its servers in: `$TRESTLE_TESTBED_DIR/<pid>` (default
/// `/tmp/trestle-testbed/<pid>`, or `<pid>.N` when an earlier process had the same id).
/// Folders of processes that are gone and untouched for an hour are removed on first use:
/// the next test binary of the same run starts at once, and must not take a failed test's
/// logs away before anyone reads them.
pub fn run_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = std::env::var_os("TRESTLE_TESTBED_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/tmp/trestle-testbed"));
        remove_stale_runs(&base);
        std::fs::create_dir_all(&base).expect("cannot create the test bed folder");
        // Process ids wrap (pid_max is often 32,768) and a long run spawns thousands of
        // processes: a folder left by an earlier process with our id gets a suffix.
        let pid = std::process::id();
        for n in 0.. {
            let dir = match n {
                0 => base.join(pid.to_string()),
                n => base.join(format!("{pid}.{n}")),
            };
            match std::fs::create_dir(&dir) {
                Ok(()) => return dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => panic!(
                    "cannot create the test bed run folder {}: {e}",
                    dir.display()
                ),
            }
        }
        unreachable!("some numbered run folder is free")
    })
}

fn remove_stale_runs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.split('.').next());
        let Some(pid) = pid.and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let idle = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| modified.elapsed().ok())
            .is_some_and(|idle| idle > std::time::Duration::from_secs(3600));
        if idle && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A fresh folder for one server instance inside the run folder, e.g. `synapse-3`.
pub(crate) fn server_dir(kind: &str) -> Result<PathBuf> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let dir = run_dir().join(format!("{kind}-{}", NEXT.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir).map_err(Error::io(format!("creating {}", dir.display())))?;
    Ok(dir)
}

/// The Python venv holding matrix-synapse: `$TRESTLE_SYNAPSE_VENV`, else what
/// `tests/install-deps.sh --print-synapse-venv` names.
pub(crate) fn synapse_venv() -> Result<PathBuf> {
    match std::env::var_os("TRESTLE_SYNAPSE_VENV") {
        Some(venv) => Ok(PathBuf::from(venv)),
        None => installed_venv("synapse"),
    }
}

/// The Python venv holding schemathesis, as `tests/install-deps.sh` names it.
pub fn schemathesis_venv() -> Result<PathBuf> {
    installed_venv("schemathesis")
}

/// The venv `tests/install-deps.sh --print-<name>-venv` names (installing it if missing).
fn installed_venv(name: &str) -> Result<PathBuf> {
    let script = workspace_root().join("tests/install-deps.sh");
    let output = std::process::Command::new("bash")
        .arg(&script)
        .arg(format!("--print-{name}-venv"))
        .output()
        .map_err(Error::io(format!("running {}", script.display())))?;
    let venv = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !output.status.success() || !venv.join("bin/python").exists() {
        return Err(Error::Missing(format!(
            "no {name} venv at {:?}",
            venv.display()
        )));
    }
    Ok(venv)
}

/// The path of a server config template in `tests/servers/`.
pub(crate) fn template(name: &str) -> PathBuf {
    workspace_root().join("tests/servers").join(name)
}

/// Renders a template: every `{{NAME}}` is replaced by its value; a placeholder left
/// unreplaced is an error, so a template and its caller cannot drift apart silently.
pub(crate) fn render_template(name: &str, values: &[(&str, &str)], out: &Path) -> Result<()> {
    let path = template(name);
    let mut text = std::fs::read_to_string(&path)
        .map_err(Error::io(format!("reading template {}", path.display())))?;
    for (key, value) in values {
        text = text.replace(&format!("{{{{{key}}}}}"), value);
    }
    if let Some(start) = text.find("{{") {
        let rest = &text[start..];
        let end = rest.find("}}").map_or(rest.len(), |e| e + 2);
        return Err(Error::Protocol(format!(
            "template {name} has an unreplaced placeholder {}",
            &rest[..end]
        )));
    }
    std::fs::write(out, text).map_err(Error::io(format!("writing {}", out.display())))
}

/// The path of an installed program: on `PATH`, or in the sbin folders a non-root `PATH`
/// may lack.
pub(crate) fn program(name: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| Error::Missing(format!("{name} is not installed")))
}
