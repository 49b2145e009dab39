//! The command line every bridge binary shares, and the entry point that runs it.
//!
//! A bridge describes itself by implementing [`Bridge`]; its `main` is then
//! `bridge_core::cli::main::<MyBridge>()`. The commands are:
//!
//! - `run` (the default): load and check the config, install logging, load the registration
//!   (refusing one that no longer matches the config), and hand over to [`Bridge::run`];
//! - `generate-config [--output PATH] [--force]`: write a commented example config with a
//!   fresh encryption key (to the `--config` path unless `--output` is given; `-` prints it);
//! - `generate-registration`: write the registration file from the config, keeping tokens;
//! - `check-config`: report every problem of the config (and of an existing registration
//!   file) with its key path, exiting non-zero if there is any.
//!
//! `-c/--config PATH` (default `config.yaml`, or `$TRESTLE_CONFIG`) names the config file.
//! Exit status: 0 on success, 1 on a problem, 2 on a usage error.

use std::future::Future;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use registration::Registration;

use crate::config::{
    BridgeConfig, BridgeInfo, ConfigError, NetworkConfig, RegistrationError, generate_config,
    generate_registration, load_registration_checked,
};
use crate::logging::{self, LoggingError};

/// The environment variable giving the config path when `-c/--config` is not.
pub const CONFIG_ENV: &str = "TRESTLE_CONFIG";

/// The config path when neither `-c/--config` nor [`CONFIG_ENV`] gives one.
pub const DEFAULT_CONFIG_PATH: &str = "config.yaml";

/// A bridge binary, as the shared command line sees it.
pub trait Bridge: 'static {
    /// Name, executable, version and default port of the bridge.
    const INFO: BridgeInfo;

    /// The bridge's own config section (`irc:`, `xmpp:`).
    type Network: NetworkConfig;

    /// Runs the bridge until it is told to stop; called by `run` with logging installed,
    /// inside a multi-threaded Tokio runtime, once the config and the registration have been
    /// loaded and checked.
    fn run(
        config: BridgeConfig<Self::Network>,
        registration: Registration,
    ) -> impl Future<Output = anyhow::Result<()>> + Send;
}

/// The shared command line.
#[derive(Debug, Clone, PartialEq, Eq, Parser)]
pub struct Cli {
    /// Path of the config file.
    #[arg(
        short = 'c',
        long,
        global = true,
        value_name = "PATH",
        env = CONFIG_ENV,
        default_value = DEFAULT_CONFIG_PATH
    )]
    pub config: PathBuf,

    /// What to do; `run` when omitted.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// The subcommands.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// Run the bridge (the default).
    Run,
    /// Write a complete, commented example config with a fresh encryption key.
    GenerateConfig {
        /// Where to write it (default: the --config path); `-` prints it.
        #[arg(short, long, value_name = "PATH")]
        output: Option<PathBuf>,
        /// Overwrite an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Write the appservice registration file from the config, keeping existing tokens.
    GenerateRegistration,
    /// Check the config (and the registration file, if present), reporting every problem.
    CheckConfig,
}

/// The clap command for bridge `B`, named and versioned after it.
pub fn command<B: Bridge>() -> clap::Command {
    Cli::command()
        .name(B::INFO.binary)
        .bin_name(B::INFO.binary)
        .version(B::INFO.version)
        .about(format!(
            "Trestle: the Matrix bridge to {}",
            B::INFO.name.to_uppercase()
        ))
}

/// Runs bridge `B` with the process's arguments; `main` of a bridge binary is just this.
pub fn main<B: Bridge>() -> ExitCode {
    main_with_args::<B, _, _>(std::env::args_os())
}

/// Runs bridge `B` with the given arguments (the first one is the program name).
pub fn main_with_args<B, I, T>(args: I) -> ExitCode
where
    B: Bridge,
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match command::<B>()
        .try_get_matches_from(args)
        .and_then(|mut matches| Cli::from_arg_matches_mut(&mut matches))
    {
        Ok(cli) => cli,
        Err(error) => {
            // --help and --version arrive here too, and go to stdout with status 0.
            let _ = error.print();
            return if error.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let config_path = cli.config;
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => run::<B>(&config_path),
        Command::GenerateConfig { output, force } => finish(write_example_config::<B>(
            output.as_deref().unwrap_or(&config_path),
            force,
        )),
        Command::GenerateRegistration => finish(write_registration::<B>(&config_path)),
        Command::CheckConfig => check_config::<B>(&config_path),
    }
}

/// What can stop a command.
#[derive(Debug, thiserror::Error)]
enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Registration(#[from] RegistrationError),
    #[error(transparent)]
    Logging(#[from] LoggingError),
    #[error("{} already exists; pass --force to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("cannot write {}: {source}", path.display())]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot start the async runtime: {0}")]
    Runtime(#[source] io::Error),
}

/// Prints a command's failure and turns it into the exit status.
fn finish(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn load<B: Bridge>(path: &Path) -> Result<BridgeConfig<B::Network>, ConfigError> {
    BridgeConfig::load(path, B::INFO)
}

fn run<B: Bridge>(config_path: &Path) -> ExitCode {
    let config = match load::<B>(config_path) {
        Ok(config) => config,
        Err(error) => return finish(Err(error.into())),
    };
    if let Err(error) = logging::init(&config.logging) {
        return finish(Err(error.into()));
    }
    // From here on failures are logged, so that they reach wherever the logs go (and in the
    // chosen format).
    let registration = match load_registration_checked(&config) {
        Ok(registration) => registration,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!("{}", CliError::Runtime(error));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(B::run(config, registration)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn write_example_config<B: Bridge>(output: &Path, force: bool) -> Result<(), CliError> {
    let text = generate_config::<B::Network>(&B::INFO);
    if output == Path::new("-") {
        print!("{text}");
        return Ok(());
    }
    write_private_file(output, text.as_bytes(), force)?;
    println!(
        "wrote {}; edit it, then run `{} -c {} generate-registration`",
        output.display(),
        B::INFO.binary,
        output.display()
    );
    Ok(())
}

/// Writes `contents` to `path` with mode 0600 (the config holds secrets), atomically: a
/// temporary sibling is written and renamed into place, refusing to replace an existing
/// file unless `force`.
fn write_private_file(path: &Path, contents: &[u8], force: bool) -> Result<(), CliError> {
    let write_error = |source| CliError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // Refuse early, before writing anything; `persist_noclobber` below closes the race.
    if !force && path.exists() {
        return Err(CliError::Exists(path.to_owned()));
    }
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(write_error)?;
    file.write_all(contents)
        .and_then(|()| file.as_file().sync_all())
        .map_err(write_error)?;
    let persisted = if force {
        file.persist(path)
    } else {
        file.persist_noclobber(path)
    };
    match persisted {
        // The rename is durable only once the folder is synced.
        Ok(_) => std::fs::File::open(dir)
            .and_then(|folder| folder.sync_all())
            .map_err(write_error),
        Err(error) if error.error.kind() == io::ErrorKind::AlreadyExists => {
            Err(CliError::Exists(path.to_owned()))
        }
        Err(error) => Err(write_error(error.error)),
    }
}

fn write_registration<B: Bridge>(config_path: &Path) -> Result<(), CliError> {
    let config = load::<B>(config_path)?;
    let generated = generate_registration(&config)?;
    let path = generated.path.display();
    if generated.kept_tokens {
        println!("wrote {path} (kept the existing tokens)");
    } else {
        println!(
            "wrote {path} with new tokens; add it to the homeserver (Synapse: \
             app_service_config_files) and restart the homeserver"
        );
    }
    Ok(())
}

fn check_config<B: Bridge>(config_path: &Path) -> ExitCode {
    let config = match load::<B>(config_path) {
        Ok(config) => config,
        Err(error) => return finish(Err(error.into())),
    };
    match load_registration_checked(&config) {
        Ok(_) => {}
        Err(RegistrationError::Missing { path, binary }) => {
            println!(
                "note: appservice.registration: {} does not exist yet; write it with `{binary} generate-registration`",
                path.display()
            );
        }
        Err(error) => {
            eprintln!("error: appservice.registration: {error}");
            return ExitCode::FAILURE;
        }
    }
    println!("{}: OK", config_path.display());
    ExitCode::SUCCESS
}

/// Installs the stop-signal handlers now and returns a future that completes when the
/// process is asked to stop: Ctrl-C (SIGINT) or, on Unix, SIGTERM (what systemd and
/// container runtimes send).
///
/// Installing before awaiting matters: a signal that arrives between "starting" and the
/// first poll would otherwise kill the process with the default action instead of stopping
/// it cleanly.
pub fn shutdown_signal() -> io::Result<impl Future<Output = ()> + Send> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut interrupt = signal(SignalKind::interrupt())?;
        let mut terminate = signal(SignalKind::terminate())?;
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
            // The handlers stay installed, so a second signal would do nothing: make it
            // stop the process at once. Nothing is lost that way, since every
            // acknowledged transaction is already stored.
            tokio::spawn(async move {
                tokio::select! {
                    _ = interrupt.recv() => {}
                    _ = terminate.recv() => {}
                }
                eprintln!("second stop signal: exiting now");
                std::process::exit(130);
            });
        })
    }
    #[cfg(not(unix))]
    {
        let ctrl_c = tokio::signal::ctrl_c();
        Ok(async move {
            // Without a working handler there is nothing to wait for; stopping is safer
            // than running unstoppable.
            let _ = ctrl_c.await;
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn run_is_the_default_and_config_is_global() {
        let cli = Cli::try_parse_from(["bridge", "check-config", "-c", "x.yaml"]).expect("parses");
        assert_eq!(cli.config, Path::new("x.yaml"));
        assert_eq!(cli.command, Some(Command::CheckConfig));

        let cli = Cli::try_parse_from(["bridge", "--config", "y.yaml"]).expect("parses");
        assert_eq!(cli.config, Path::new("y.yaml"));
        assert_eq!(cli.command, None);

        let cli = Cli::try_parse_from(["bridge", "generate-config", "-o", "-", "--force"])
            .expect("parses");
        assert_eq!(
            cli.command,
            Some(Command::GenerateConfig {
                output: Some(PathBuf::from("-")),
                force: true
            })
        );
    }

    #[test]
    fn private_files_are_not_overwritten_without_force() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("config.yaml");
        write_private_file(&path, b"one", false).expect("first write");
        assert!(matches!(
            write_private_file(&path, b"two", false),
            Err(CliError::Exists(_))
        ));
        assert_eq!(std::fs::read(&path).expect("read"), b"one");
        write_private_file(&path, b"three", true).expect("forced write");
        assert_eq!(std::fs::read(&path).expect("read"), b"three");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
